/**
 * Stripe-style cursor pagination: newest first, `starting_after` names the last id of the
 * previous page. Ids are time-ordered, so a page is a walk of the primary key.
 */
export const LIST_LIMIT_DEFAULT = 10;
// Large enough for exports page by page, small enough that one page is one cheap index walk.
export const LIST_LIMIT_MAX = 100;

export interface ListPage<T> {
  object: 'list';
  url: string;
  has_more: boolean;
  data: T[];
}

/** Build a page from limit + 1 fetched rows: the extra row only says whether more follow. */
export function page<T>(items: T[], limit: number, url: string): ListPage<T> {
  return { object: 'list', url, has_more: items.length > limit, data: items.slice(0, limit) };
}
