import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { CoordinatorError } from './errors.js';

export const TOKEN_ENV = 'GOOGLENET_COORDINATOR_TOKEN';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
export const isLoopback = (host: string): boolean => LOOPBACK.has(host) || host.startsWith('127.');

/** The token in force: the option, else the environment variable, else none. */
export function resolveToken(token: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const t = token ?? env[TOKEN_ENV];
  return t === undefined || t === '' ? undefined : t;
}

/** Binding beyond loopback without a token would let anyone on the network inject gradients. */
export function requireTokenFor(host: string, token: string | undefined): void {
  if (!isLoopback(host) && token === undefined) {
    throw new CoordinatorError('TOKEN_REQUIRED',
      `binding ${host} exposes the coordinator beyond this machine; pass --token=... or set ${TOKEN_ENV} (workers need the same token)`);
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/**
 * Constant-time comparison: hashing first gives both sides the same length, so neither the length nor
 * the first differing byte of the expected token leaks through timing.
 */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  return timingSafeEqual(digest(given ?? ''), digest(expected)) && given !== undefined;
}

/** `Authorization: Bearer <token>` (headers, not the URL, so tokens stay out of access logs). */
export function requestToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  const m = /^Bearer (.+)$/.exec(h);
  return m ? m[1] : undefined;
}
