export { startCoordinator, type Coordinator, type CoordinatorOptions } from './server.js';
export { CoordinatorClient, type AllReduceOptions, type ClientOptions, type ClientTiming } from './client.js';
export { CoordinatorError, type CoordinatorErrorCode } from './errors.js';
export type { StatusReport, RoundTiming, WorkerStatus } from './status.js';
export { PROTOCOL_VERSION, CloseCode } from './protocol.js';
export { TOKEN_ENV } from './auth.js';
export { referenceMean } from './reduce.js';
