import ort from 'onnxruntime-node';
import { describeWebGpuFailure, FLOAT16_PROBE_MODEL } from '../../worker/pipeline/webgpu-device.js';

/**
 * Why this machine cannot run the WebGPU tests, or undefined when it can: a WebGPU session must
 * start (Dawn found a Vulkan device it accepts). `.ci/run` installs one (Mesa's lavapipe).
 */
export async function webgpuSkipReason(): Promise<string | undefined> {
  if (!ort.listSupportedBackends().some((backend) => backend.name === 'webgpu')) {
    return `onnxruntime-node has no WebGPU provider on ${process.platform}-${process.arch}`;
  }
  try {
    const session = await ort.InferenceSession.create(FLOAT16_PROBE_MODEL, { executionProviders: [{ name: 'webgpu' }], logSeverityLevel: 3 });
    await session.release();
    return undefined;
  } catch (err) {
    const cause = describeWebGpuFailure((err as Error).message).split('. ')[0];
    return `${cause}; .ci/run installs mesa-vulkan-drivers from bookworm-backports`;
  }
}
