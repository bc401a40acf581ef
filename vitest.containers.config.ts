import { defineConfig } from 'vitest/config';

/** `npm run test:containers`: builds the image and runs its roles as containers (test/containers/). */
export default defineConfig({
  test: {
    include: ['test/containers/**/*.containers.ts'],
    testTimeout: 5 * 60_000,
    // The first run builds the bases (debootstrap, Node) and the image.
    hookTimeout: 45 * 60_000,
  },
});
