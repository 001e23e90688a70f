/**
 * `floodgate audit`: the money invariants, checked against what the database holds. Run it
 * after a drill, a crash or a deploy; it exits non-zero on any violation.
 */
import type { Queryable } from '../platform/db/pool.js';
import { CHECKS, runCheck, type Violation } from './sql.js';

export interface AuditReport {
  checks: string[];
  violations: Violation[];
}

export async function audit(db: Queryable): Promise<AuditReport> {
  const checks = Object.keys(CHECKS);
  const violations: Violation[] = [];
  for (const check of checks) violations.push(...(await runCheck(db, check)));
  return { checks, violations };
}

export function formatReport(report: AuditReport): string {
  if (report.violations.length === 0) return `audit: ${report.checks.length} checks passed, no violations`;
  const lines = report.violations.map((v) => `  ${v.check}  merchant ${v.merchant_id}  ${v.object_id}: ${v.detail}`);
  return [`audit: ${report.violations.length} violation(s)`, ...lines].join('\n');
}
