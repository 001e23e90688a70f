/**
 * The front door of providers: the interface every capability codes against, and the reading
 * of what a provider recorded for one of our keys (its look-up and its webhooks carry it).
 * Other capabilities import this file only, never the clients or the simulator directly.
 */

export { operationFromRecorded, type RecordedResponse } from './http-provider.js';
export type {
  AuthorizeRequest,
  PaymentProvider,
  ProviderCharge,
  ProviderOperation,
  ProviderOutcome,
  ProviderRefund,
} from './provider.js';
