import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: integration files start servers and ONNX sessions; keep them from starving.
    maxWorkers: 2,
    globalSetup: ['test/global-setup.ts'],
  },
});
