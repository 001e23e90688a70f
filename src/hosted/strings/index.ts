/**
 * The hosted page's languages. Adding one: copy en.ts to <code>.ts, translate the values, and
 * list it here; the page then speaks it to browsers that ask for it (Accept-Language).
 */
import { en, type Strings } from './en.js';

export const LOCALES: Record<string, Strings> = { en };

/** The first language of an Accept-Language header that we have, else English. */
export function stringsFor(acceptLanguage: string | undefined): Strings {
  for (const part of (acceptLanguage ?? '').split(',').slice(0, 10)) {
    const tag = part.split(';')[0]?.trim().toLowerCase() ?? '';
    const found = LOCALES[tag] ?? LOCALES[tag.split('-')[0] ?? ''];
    if (found) return found;
  }
  return en;
}
