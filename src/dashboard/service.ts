/**
 * Dashboard users: created by an operator (`floodgate users create`), signing in with email and
 * password. A failed sign-in takes as long whether or not the email exists.
 */

import type { Pool } from '../platform/db/pool.js';
import { newId } from '../platform/ids.js';
import { hashPassword, PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, verifyPassword } from './passwords.js';
import * as sql from './sql.js';

export type CreateUserResult =
  | { kind: 'created'; user: { id: string; merchant_id: string; email: string } }
  | { kind: 'invalid'; message: string }
  | { kind: 'email_taken' }
  | { kind: 'merchant_missing' };

const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,189}$/;

// Verified against when the email is unknown, so that answering takes the same time either way.
let decoyHash: Promise<string> | undefined;

export async function createUser(
  pool: Pool,
  input: { merchantId: string; email: string; password: string },
  merchantExists: (id: string) => Promise<boolean>,
): Promise<CreateUserResult> {
  const email = input.email.trim();
  if (!EMAIL.test(email)) return { kind: 'invalid', message: 'the email must look like name@example.com' };
  if (input.password.length < PASSWORD_LENGTH_MIN || input.password.length > PASSWORD_LENGTH_MAX) {
    return { kind: 'invalid', message: `the password must be ${PASSWORD_LENGTH_MIN} to ${PASSWORD_LENGTH_MAX} characters` };
  }
  if (!(await merchantExists(input.merchantId))) return { kind: 'merchant_missing' };
  const user = { merchant_id: input.merchantId, id: newId('usr'), email, password_hash: await hashPassword(input.password) };
  if (!(await sql.insertUser(pool, user))) return { kind: 'email_taken' };
  return { kind: 'created', user: { id: user.id, merchant_id: user.merchant_id, email } };
}

export async function authenticateUser(pool: Pool, email: string, password: string): Promise<sql.UserRow | undefined> {
  const user = await sql.selectUserByEmail(pool, email.trim());
  if (!user) {
    decoyHash ??= hashPassword('decoy password for unknown emails');
    await verifyPassword(password, await decoyHash);
    return undefined;
  }
  return (await verifyPassword(password, user.password_hash)) ? user : undefined;
}

export function findUser(pool: Pool, merchantId: string, id: string) {
  return sql.selectUser(pool, merchantId, id);
}
