/** The request and response schemas of sales' HTTP edge (routes.ts), and what a hosted-settings body changes. */
import { Type } from '@sinclair/typebox';
import { QUEUE_LIMITS } from '../admission/service.js';
import { IdParams } from '../platform/http/schemas.js';
import { ID_PATTERN } from '../platform/ids.js';
import {
  ADMIT_PER_SECOND_DEFAULT,
  GRACE_SECONDS_DEFAULT,
  HOLD_SECONDS_DEFAULT,
  ITEMS_PER_SALE_MAX,
  MAX_SHOPPERS_DEFAULT,
  PER_BUYER_LIMIT_DEFAULT,
  STOCK_MAX,
} from './domain.js';
import type { HostedSettings as HostedSettingsRow } from './sql.js';

const Item = Type.Object({
  id: Type.String(),
  object: Type.Literal('item'),
  name: Type.String(),
  price: Type.Integer(),
  stock: Type.Object({ total: Type.Integer(), available: Type.Integer(), held: Type.Integer(), sold: Type.Integer() }),
});

export const Sale = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('sale'),
    name: Type.String(),
    currency: Type.String(),
    opens_at: Type.String(),
    closes_at: Type.Union([Type.String(), Type.Null()]),
    status: Type.Union([Type.Literal('scheduled'), Type.Literal('open'), Type.Literal('closed')]),
    per_buyer_limit: Type.Integer(),
    hold_seconds: Type.Integer(),
    waiting_room: Type.Object({ admit_per_second: Type.Number(), max_shoppers: Type.Integer(), grace_seconds: Type.Integer() }),
    items: Type.Array(Item),
    created: Type.Integer(),
    hosted_page: Type.Boolean({ description: 'Whether the hosted sale page at hosted_url is on.' }),
    hosted_url: Type.Union([Type.String(), Type.Null()], { description: 'The hosted sale page to send buyers to; null while off.' }),
    branding: Type.Object({
      name: Type.Union([Type.String(), Type.Null()]),
      logo_url: Type.Union([Type.String(), Type.Null()]),
      color: Type.Union([Type.String(), Type.Null()]),
    }),
    success_url: Type.Union([Type.String(), Type.Null()]),
    cancel_url: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Sale' },
);

export const Hold = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('hold'),
    sale: Type.String(),
    buyer_reference: Type.Optional(Type.String({ description: "Only to a secret key: it is the buyer's credential in line." })),
    status: Type.String(),
    amount: Type.Integer(),
    currency: Type.String(),
    items: Type.Array(Type.Object({ item: Type.String(), quantity: Type.Integer() })),
    expires_at: Type.String(),
    created: Type.Integer(),
  },
  { $id: 'Hold' },
);

export const Order = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('order'),
    sale: Type.String(),
    hold: Type.String(),
    payment_intent: Type.String(),
    amount: Type.Integer(),
    currency: Type.String(),
    status: Type.String(),
    paid_at: Type.Union([Type.Integer(), Type.Null()]),
    created: Type.Integer(),
    payment_intent_object: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { $id: 'Order' },
);

const ADMIT_PER_SECOND_MIN = 0.001;
export const Name = Type.String({ minLength: 1, maxLength: 200 });
export const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 with a time zone, e.g. 2026-12-01T10:00:00Z.' });
const PerBuyerLimit = Type.Integer({
  minimum: 1,
  maximum: 100,
  description: `Units one buyer may hold or buy; default ${PER_BUYER_LIMIT_DEFAULT}.`,
});
const AdmitPerSecond = Type.Number({
  // One buyer every 1000 seconds is slower than any sale runs; below it, the interval between
  // admissions stops being a number the waiting room can schedule (1e-300 gave a 500).
  minimum: ADMIT_PER_SECOND_MIN,
  maximum: QUEUE_LIMITS.admitPerSecondMax,
  description: `Buyers the waiting room admits per second; default ${ADMIT_PER_SECOND_DEFAULT}.`,
});
const MaxShoppers = Type.Integer({
  minimum: 0,
  maximum: QUEUE_LIMITS.maxShoppersMax,
  description: `Admitted buyers shopping at once (0 pauses admission); default ${MAX_SHOPPERS_DEFAULT}.`,
});
const GraceSeconds = Type.Integer({
  minimum: QUEUE_LIMITS.graceSecondsMin,
  maximum: QUEUE_LIMITS.graceSecondsMax,
  description: `A waiting buyer who stops polling this long loses their place; default ${GRACE_SECONDS_DEFAULT}.`,
});
const HoldSeconds = Type.Integer({
  minimum: 30,
  maximum: 3600,
  description: `How long a hold keeps its stock; default ${HOLD_SECONDS_DEFAULT}.`,
});

const WebUrl = (description: string) =>
  Type.Union([Type.String({ minLength: 1, maxLength: 2000, pattern: '^https?://[^\\s]+$', description }), Type.Null()]);

/** The hosted page's settings; null clears one. */
const HostedSettings = {
  hosted_page: Type.Optional(Type.Boolean({ description: 'Turns the hosted sale page (/s/:sale) on or off; off by default.' })),
  branding: Type.Optional(
    Type.Object(
      {
        name: Type.Optional(Type.Union([Name, Type.Null()], { description: 'Shown as the seller on the hosted page.' })),
        logo_url: Type.Optional(
          WebUrl('An https (or http) image the hosted page shows; its origin is the only other one the page loads from.'),
        ),
        color: Type.Optional(
          Type.Union([Type.String({ pattern: '^#[0-9A-Fa-f]{6}$', description: 'Accent colour, #rrggbb.' }), Type.Null()]),
        ),
      },
      { additionalProperties: false },
    ),
  ),
  success_url: Type.Optional(WebUrl('Where the receipt sends the buyer on; the order id is appended as ?order=.')),
  cancel_url: Type.Optional(WebUrl('Where a buyer who leaves the hosted page goes.')),
};

type HostedBody = { [K in keyof typeof HostedSettings]?: import('@sinclair/typebox').Static<(typeof HostedSettings)[K]> };

/** The hosted settings a request gives, as the sales service takes them. */
export function hostedChanges(body: HostedBody): Partial<HostedSettingsRow> {
  const changes: Partial<HostedSettingsRow> = {};
  if (body.hosted_page !== undefined) changes.hosted_page = body.hosted_page;
  if (body.branding?.name !== undefined) changes.brand_name = body.branding.name;
  if (body.branding?.logo_url !== undefined) changes.brand_logo_url = body.branding.logo_url;
  if (body.branding?.color !== undefined) changes.brand_color = body.branding.color?.toLowerCase() ?? null;
  if (body.success_url !== undefined) changes.success_url = body.success_url;
  if (body.cancel_url !== undefined) changes.cancel_url = body.cancel_url;
  return changes;
}

/** The settings a sale is created with and may change later, all optional with defaults. */
export const SaleSettings = {
  ...HostedSettings,
  closes_at: Type.Optional(Type.Union([Timestamp, Type.Null()])),
  per_buyer_limit: Type.Optional(PerBuyerLimit),
  hold_seconds: Type.Optional(HoldSeconds),
  admit_per_second: Type.Optional(AdmitPerSecond),
  max_shoppers: Type.Optional(MaxShoppers),
  grace_seconds: Type.Optional(GraceSeconds),
};

export const CreateSaleBody = Type.Object(
  {
    name: Name,
    currency: Type.String({ minLength: 3, maxLength: 3 }),
    opens_at: Timestamp,
    ...SaleSettings,
    items: Type.Array(
      Type.Object(
        { name: Name, price: Type.Integer({ minimum: 1 }), stock: Type.Integer({ minimum: 0, maximum: STOCK_MAX }) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: ITEMS_PER_SALE_MAX },
    ),
  },
  { additionalProperties: false },
);

export const saleId = IdParams(ID_PATTERN('sale'));
export const holdId = IdParams(ID_PATTERN('hold'));
export const orderId = IdParams(ID_PATTERN('ord'));
