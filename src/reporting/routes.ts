/**
 * The reports' HTTP edge (secret key only). Every answer says where it was read: in the body
 * (`source`) and in headers, which the CSV export has too:
 *   Floodgate-Read-Source   replica or primary
 *   Floodgate-Read-Lag-Ms   how far behind the primary the data may be
 *   Floodgate-Read-As-Of    the data holds every commit acknowledged before this moment
 *   Floodgate-Read-Fallback why the primary served although replicas are configured
 */
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import type { ReadRouter, ReadTarget } from '../platform/db/replicas.js';
import { principalOf } from '../platform/http/context.js';
import { ApiError } from '../platform/http/errors.js';
import { errorResponses, IdParams } from '../platform/http/schemas.js';
import type { HttpServer } from '../platform/http/server.js';
import { ID_PATTERN } from '../platform/ids.js';
import { REPORT_RANGE_DAYS_DEFAULT, REPORT_RANGE_DAYS_MAX, reportRange } from './domain.js';
import * as reports from './service.js';

const Source = Type.Object(
  {
    served_by: Type.Union([Type.Literal('replica'), Type.Literal('primary')]),
    replica: Type.Union([Type.String(), Type.Null()], { description: 'host:port of the replica that served.' }),
    lag_ms: Type.Integer({ description: 'How far behind the primary the data may be.' }),
    as_of: Type.String({ description: 'The data holds every payment and order committed before this moment.' }),
    fallback_reason: Type.Union(
      [
        Type.Literal('no_replica_configured'),
        Type.Literal('replica_lagging'),
        Type.Literal('replica_unreachable'),
        Type.Literal('replica_not_in_recovery'),
        Type.Null(),
      ],
      { description: 'Why the primary served.' },
    ),
  },
  { $id: 'ReportSource' },
);

const Money = { count: Type.Integer(), amount: Type.Integer() };

const PaymentsReport = Type.Object(
  {
    object: Type.Literal('report.payments'),
    from: Type.String(),
    to: Type.String(),
    data: Type.Array(
      Type.Object({
        day: Type.String(),
        status: Type.String(),
        currency: Type.String(),
        ...Money,
        amount_received: Type.Integer(),
        amount_refunded: Type.Integer(),
      }),
    ),
    source: Source,
  },
  { $id: 'PaymentsReport' },
);

const SaleReport = Type.Object(
  {
    object: Type.Literal('report.sale'),
    sale: Type.Object({ id: Type.String(), name: Type.String(), currency: Type.String(), opens_at: Type.String() }),
    items: Type.Array(
      Type.Object({
        id: Type.String(),
        name: Type.String(),
        price: Type.Integer(),
        stock: Type.Object({ total: Type.Integer(), available: Type.Integer(), held: Type.Integer(), sold: Type.Integer() }),
        units_paid: Type.Integer(),
        revenue: Type.Integer(),
      }),
    ),
    revenue: Type.Integer({ description: 'Paid orders’ revenue, in the sale’s currency.' }),
    orders_by_status: Type.Array(Type.Object({ status: Type.String(), ...Money })),
    source: Source,
  },
  { $id: 'SaleReport' },
);

const Day = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$', description: 'A UTC calendar day, YYYY-MM-DD.' });
const saleParams = IdParams(ID_PATTERN('sale'));

export function registerReportRoutes(app: HttpServer, reads: ReadRouter): void {
  app.get(
    '/v1/reports/payments',
    {
      schema: {
        tags: ['reports'],
        summary: 'Payments by UTC day, status and currency (read from a replica when one is close enough behind)',
        description: `From \`from\` to \`to\`, both included; \`to\` defaults to today, \`from\` to ${REPORT_RANGE_DAYS_DEFAULT} days ending at \`to\`; at most ${REPORT_RANGE_DAYS_MAX} days.`,
        querystring: Type.Object({ from: Type.Optional(Day), to: Type.Optional(Day) }, { additionalProperties: false }),
        response: { 200: PaymentsReport, ...errorResponses },
      },
    },
    async (request, reply) => {
      const range = reportRange(request.query);
      if (!range.ok) throw new ApiError('parameter_invalid', range.message, range.param);
      const { target, report } = await reports.paymentsReport(reads, principalOf(request).merchantId, range);
      sourceHeaders(reply, target);
      return report;
    },
  );

  app.get(
    '/v1/reports/sales/:id',
    {
      schema: {
        tags: ['reports'],
        summary: 'A sale’s items (sold, held, revenue) and its orders by status (read from a replica when one is close enough behind)',
        params: saleParams,
        response: { 200: SaleReport, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { target, report } = await reports.saleReport(reads, principalOf(request).merchantId, request.params.id);
      sourceHeaders(reply, target);
      if (!report) throw new ApiError('resource_missing', `No such sale: '${request.params.id}'`, 'id');
      return report;
    },
  );

  app.get(
    '/v1/reports/sales/:id/orders.csv',
    {
      schema: {
        tags: ['reports'],
        summary: 'A sale’s orders as CSV, oldest first, with each buyer’s reference (read from a replica when one is close enough behind)',
        description: `Columns: ${reports.ORDER_EXPORT_COLUMNS.join(', ')}. One snapshot: the file is consistent however long it takes.`,
        params: saleParams,
        // No 200 schema: the body is a stream of CSV, not JSON to serialize.
        response: errorResponses,
      },
    },
    async (request, reply) => {
      const opened = await reports.openOrderExport(reads, principalOf(request).merchantId, request.params.id);
      if (!opened) throw new ApiError('resource_missing', `No such sale: '${request.params.id}'`, 'id');
      sourceHeaders(reply, opened.target);
      reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="${request.params.id}-orders.csv"`)
        .header('cache-control', 'private, no-store');
      // The typed reply knows only the JSON error bodies; a stream is sent as it is.
      return (reply as FastifyReply).send(Readable.from(opened.lines));
    },
  );
}

function sourceHeaders(reply: FastifyReply, target: ReadTarget): void {
  reply.header('floodgate-read-source', target.source);
  reply.header('floodgate-read-lag-ms', String(target.lagMs));
  reply.header('floodgate-read-as-of', target.asOf.toISOString());
  if (target.fallbackReason) reply.header('floodgate-read-fallback', target.fallbackReason);
}
