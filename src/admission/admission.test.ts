/**
 * One table of waiting-room behaviour, run over both stores: memory and Redis. Time is driven
 * explicitly (`at(seconds)`), never slept.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { at, BACKENDS, POLL_MAX_SECONDS, roomOn, T0, type TestSale, TOKEN_TTL_SECONDS, testSale } from '../../test/fixtures/admission.js';
import { gracePollSeconds, pollBoundSeconds, preOpenScore, type QueueView, waitingPollSeconds } from './domain.js';
import type { WaitingRoom } from './service.js';
import { deriveAdmissionKeys, shuffleSeed } from './token.js';

async function joinAll(room: WaitingRoom, sale: TestSale, buyers: string[], when: Date): Promise<QueueView[]> {
  const views: QueueView[] = [];
  for (const buyer of buyers) views.push(await room.join(sale, buyer, when));
  return views;
}

const buyers = (count: number, label = 'buyer') => Array.from({ length: count }, (_, i) => `${label}-${i + 1}`);

/** The admission order the draw gives `count` pre-open arrivals of `saleId`, computed from the rule itself. */
function expectedDraw(saleId: string, count: number): number[] {
  const seed = shuffleSeed(deriveAdmissionKeys('test_admission_secret_0123456789abcdef'), saleId);
  return Array.from({ length: count }, (_, i) => i + 1).sort((a, b) => preOpenScore(seed, a) - preOpenScore(seed, b));
}

for (const backend of BACKENDS) {
  describe(`waiting room on ${backend.name}`, { skip: backend.skip }, () => {
    const fresh = () => roomOn(backend.store().store);

    test('joining is idempotent per buyer; others queue behind in arrival order', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0 });
      const a = await room.join(sale, 'alice', at(1));
      const b = await room.join(sale, 'bob', at(2));
      const again = await room.join(sale, 'alice', at(3));
      assert.match(a.ticket ?? '', /^qt_/);
      assert.equal(again.ticket, a.ticket);
      assert.notEqual(b.ticket, a.ticket);
      assert.deepEqual([again.status, again.position, b.position], ['waiting', 1, 2]);
      assert.equal(b.estimatedWaitSeconds, 1); // 2 places at 10 a second
    });

    test('after opening, buyers are admitted in arrival order at the configured rate', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 2 });
      const views = await joinAll(room, sale, buyers(7), at(0.5));
      sale.maxShoppers = 100;
      const order: string[] = [];
      for (const second of [1, 2, 3, 4]) {
        const { admitted } = await room.step(sale, at(second));
        order.push(...admitted.map((entry) => entry.ticketId));
      }
      assert.deepEqual(
        order,
        views.map((view) => view.ticket),
      );
      const first = await room.poll(sale, views[0]?.ticket as string, at(4));
      assert.equal(first?.status, 'admitted');
      assert.equal(first?.position, 0);
      assert.match(first?.admissionToken ?? '', /^adm_/);
      assert.equal(first?.retryAfterSeconds, undefined);
    });

    test('pre-open arrivals are drawn fairly at opening; later arrivals queue behind them in order', async () => {
      const room = fresh();
      const sale = testSale({ opensAt: at(60), maxShoppers: 0 });
      const early = await joinAll(room, sale, buyers(200), at(0));
      for (const view of early) {
        assert.equal(view.status, 'waiting');
        assert.equal(view.position, null);
        assert.equal(view.estimatedWaitSeconds, 60);
        assert.ok(view.retryAfterSeconds !== undefined && view.retryAfterSeconds >= 60);
        assert.ok(view.retryAfterSeconds < 60 + gracePollSeconds(sale.graceSeconds));
      }
      const late = await joinAll(room, sale, buyers(3, 'late'), at(61));
      assert.deepEqual(
        late.map((view) => view.position),
        [201, 202, 203],
      );

      const positions: number[] = [];
      for (const view of early) positions.push((await room.poll(sale, view.ticket as string, at(62)))?.position as number);
      const arrivalsInLine = expectedDraw(sale.id, 200);
      assert.deepEqual(
        positions,
        early.map((_, i) => arrivalsInLine.indexOf(i + 1) + 1),
        'positions follow the draw, the same on every node and store',
      );
      assert.notDeepEqual(
        arrivalsInLine,
        [...arrivalsInLine].sort((a, b) => a - b),
        'not arrival order',
      );
      assert.notDeepEqual(expectedDraw(`${sale.id}x`, 200), arrivalsInLine, 'another sale draws another order');

      Object.assign(sale, { maxShoppers: 1_000, admitPerSecond: 1_000 });
      const { admitted } = await room.step(sale, at(63));
      const byTicket = new Map([...early, ...late].map((view, i) => [view.ticket, i + 1]));
      assert.deepEqual(
        admitted.map((entry) => byTicket.get(entry.ticketId)),
        [...arrivalsInLine, 201, 202, 203],
        'everyone admitted exactly once, in line order',
      );
      assert.equal((await room.step(sale, at(64))).admitted.length, 0);
    });

    test('admission respects the rate, fractional rates, and the cap on shoppers', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 3 });
      const views = await joinAll(room, sale, buyers(20), at(0));
      sale.maxShoppers = 5;
      const counts = [];
      for (const second of [0, 1, 2]) counts.push((await room.step(sale, at(second))).admitted.length);
      assert.deepEqual(counts, [3, 2, 0], 'one second of credit at opening, then the cap of 5 binds');
      assert.ok(await room.releaseAdmission(sale.id, views[0]?.ticket as string));
      assert.ok(await room.releaseAdmission(sale.id, views[1]?.ticket as string));
      assert.equal((await room.step(sale, at(3))).admitted.length, 2, 'released slots are filled');

      const slow = testSale({ maxShoppers: 0, admitPerSecond: 0.5 });
      await joinAll(room, slow, buyers(10), at(0));
      slow.maxShoppers = 100;
      const slowCounts = [];
      for (const second of [0, 1, 2, 3, 4, 5, 6]) slowCounts.push((await room.step(slow, at(second))).admitted.length);
      assert.deepEqual(slowCounts, [1, 0, 1, 0, 1, 0, 1]);
    });

    test('credit does not build up in a quiet spell: at most one second’s worth at once', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 2, graceSeconds: 3_600 });
      await joinAll(room, sale, buyers(30), at(0));
      sale.maxShoppers = 100;
      assert.equal((await room.step(sale, at(10))).admitted.length, 2);
      assert.equal((await room.step(sale, at(11))).admitted.length, 2);
    });

    test('over a long run, admissions never outpace the rate plus one second of credit', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 7, graceSeconds: 3_600 });
      await joinAll(room, sale, buyers(300), at(0));
      sale.maxShoppers = 10_000;
      let total = 0;
      for (let ms = 0; ms <= 20_000; ms += 137) {
        total += (await room.step(sale, at(ms / 1000))).admitted.length;
        assert.ok(total <= 7 * (ms / 1000) + 7, `${total} admitted by ${ms} ms`);
        assert.ok(total >= 7 * (ms / 1000) - 1, `${total} admitted by ${ms} ms`);
      }
    });

    test('the front of the line is told to the millisecond when its admission is due; further back, whole seconds', async () => {
      const room = fresh();
      // Ten admissions a second: the first ten joins take the full bucket, the next twenty wait.
      const sale = testSale({ maxShoppers: 100, admitPerSecond: 10 });
      const joined = await joinAll(room, sale, buyers(30), at(0));
      assert.deepEqual(
        joined.slice(0, 10).map((view) => view.status),
        Array.from({ length: 10 }, () => 'admitted'),
      );
      const views = joined.slice(10);
      assert.deepEqual(
        views.slice(0, 10).map((view) => view.retryAfterMs),
        [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
        'the first nine are due within the second, a tenth of it apart; the tenth, due in a second, is told whole seconds',
      );
      assert.deepEqual(
        views.slice(0, 10).map((view) => view.retryAfterSeconds),
        Array.from({ length: 10 }, () => 1),
        'Retry-After keeps whole seconds',
      );
      for (const view of views.slice(10)) assert.equal(view.retryAfterMs, (view.retryAfterSeconds as number) * 1000);
      // A poll when told admits: a tenth of a second's credit is one admission.
      const first = await room.poll(sale, views[0]?.ticket as string, at(0.1));
      assert.equal(first?.status, 'admitted');

      // With no shopper slot free (admission paused here), the front is told whole seconds: polling
      // it faster would only add polls. The place's deadline keeps the whole seconds either way.
      const paused = testSale({ maxShoppers: 0, admitPerSecond: 10 });
      const line = await joinAll(room, paused, buyers(5, 'paused'), at(0));
      assert.deepEqual(
        line.map((view) => [view.position, view.retryAfterMs]),
        [1, 2, 3, 4, 5].map((position) => [position, 1000]),
      );
      assert.equal((await room.step(paused, at(1 + paused.graceSeconds - 0.001))).waiting, 5);
    });

    test('a place whose buyer stops polling is reclaimed the grace period after its Retry-After; pre-open grace starts at opening', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, graceSeconds: 10, opensAt: at(100) });
      const early = await room.join(sale, 'early', at(0));
      const [a, b, c] = await joinAll(room, sale, ['a', 'b', 'c'], at(100));
      assert.deepEqual(
        [a, b, c].map((view) => view?.retryAfterSeconds),
        [1, 1, 1],
        'near the front: poll again in a second',
      );
      assert.equal((await room.poll(sale, early.ticket as string, at(109)))?.status, 'waiting', 'still within grace after opening');
      await room.poll(sale, a?.ticket as string, at(106));
      await room.poll(sale, c?.ticket as string, at(106));
      // b is the first to come back: their own late poll finds the place already given up.
      assert.equal((await room.step(sale, at(110.999))).waiting, 4, 'b keeps the place until 1 s + 10 s after joining');
      assert.equal(await room.poll(sale, b?.ticket as string, at(111)), undefined, 'b did not poll within 1 s + 10 s');
      assert.equal((await room.poll(sale, a?.ticket as string, at(111)))?.position, 2);
      assert.equal((await room.poll(sale, c?.ticket as string, at(111)))?.position, 3);
      const back = await room.join(sale, 'b', at(112));
      assert.notEqual(back.ticket, b?.ticket);
      assert.equal(back.position, 4, 'a reclaimed buyer joins again at the back');
    });

    test('a buyer far back is told to come back in about half their wait and keeps the place until then plus the grace period', async () => {
      const room = fresh();
      // One admission a second and none happening (no shopper slots), so places move only as others lapse.
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 1, graceSeconds: 30 });
      const pollMax = pollBoundSeconds(POLL_MAX_SECONDS, sale.graceSeconds);
      const views = await joinAll(room, sale, buyers(150), at(0));
      assert.deepEqual(
        views.map((view) => view.retryAfterSeconds),
        views.map((view) => waitingPollSeconds(view.position as number, 1, pollMax)),
      );
      assert.deepEqual(
        [views[0]?.retryAfterSeconds, views[3]?.retryAfterSeconds, views[99]?.retryAfterSeconds, views[149]?.retryAfterSeconds],
        [1, 2, 50, 60],
        'the front polls every second or two; the back once a minute at most',
      );
      // Every place lapses exactly at its join's Retry-After plus the grace period.
      const kept = (seconds: number) => views.filter((view) => (view.retryAfterSeconds as number) + sale.graceSeconds > seconds).length;
      for (const seconds of [29.999, 30.999, 31, 45, 89.999, 90]) {
        assert.equal((await room.step(sale, at(seconds))).waiting, kept(seconds), `waiting at ${seconds} s`);
      }
      assert.equal(kept(89.999), 32, 'the last 32 were told 60 s and kept their places past the old 30 s grace');
      assert.equal(kept(90), 0);

      // A poll sets a new deadline from the place it finds: the last buyer, now 32nd, comes back in 16 s.
      const again = await joinAll(room, sale, buyers(150, 'again'), at(100));
      const last = again[149];
      const polled = await room.poll(sale, last?.ticket as string, at(189));
      assert.deepEqual([polled?.position, polled?.retryAfterSeconds], [32, 16]);
      // Polling much more often than told changes nothing but the deadline.
      for (let i = 0; i < 1_200; i++) await room.poll(sale, last?.ticket as string, at(189));
      assert.equal((await room.step(sale, at(190))).waiting, 1, 'the other 31 lapse 60 s + 30 s after joining');
      assert.equal((await room.step(sale, at(189 + 16 + 30 - 0.001))).waiting, 1);
      assert.equal((await room.step(sale, at(189 + 16 + 30))).waiting, 0);
      assert.equal(await room.poll(sale, last?.ticket as string, at(235)), undefined);
    });

    test('the longest Retry-After is bounded by twice the grace period and by the token’s lifetime', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 1, graceSeconds: 5 });
      const views = await joinAll(room, sale, buyers(40), at(0));
      assert.equal(views[39]?.retryAfterSeconds, 10);
      assert.equal((await room.step(sale, at(14.999))).waiting, 22, 'places 19 to 40 were told 10 s; those told less have lapsed');
      assert.equal((await room.step(sale, at(15))).waiting, 0);

      // A buyer admitted between polls (places ahead given up) must come back before the token expires.
      const shortTokens = roomOn(backend.store().store, { tokenTtlSeconds: 20 });
      const long = testSale({ maxShoppers: 0, admitPerSecond: 1, graceSeconds: 30 });
      const back = (await joinAll(shortTokens, long, buyers(100), at(0)))[99];
      assert.equal(back?.retryAfterSeconds, 20);
      assert.equal((await shortTokens.step(long, at(20 + 30 - 0.001))).waiting, 100 - 38, 'places 1 to 38 were told under 20 s');
      assert.equal((await shortTokens.step(long, at(20 + 30))).waiting, 0);
    });

    test('an unused admission lapses with its token; a used one holds its slot until release', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 1, graceSeconds: 3_600 });
      const [a, b, c] = await joinAll(room, sale, ['a', 'b', 'c'], at(0));
      assert.equal(a?.status, 'admitted');
      const tokenA = a?.admissionToken as string;
      assert.equal((await room.step(sale, at(TOKEN_TTL_SECONDS - 1))).admitted.length, 0);
      const next = await room.step(sale, at(TOKEN_TTL_SECONDS));
      assert.deepEqual(
        next.admitted.map((entry) => entry.ticketId),
        [b?.ticket],
      );
      assert.equal(await room.poll(sale, a?.ticket as string, at(TOKEN_TTL_SECONDS)), undefined);
      assert.deepEqual(await room.consumeAdmission(tokenA, sale.id, 'a', at(TOKEN_TTL_SECONDS)), { kind: 'expired' });

      const viewB = await room.poll(sale, b?.ticket as string, at(301));
      assert.deepEqual(await room.consumeAdmission(viewB?.admissionToken as string, sale.id, 'b', at(301)), {
        kind: 'ok',
        ticketId: b?.ticket,
      });
      const shopping = await room.poll(sale, b?.ticket as string, at(302));
      assert.deepEqual([shopping?.status, shopping?.admissionToken], ['admitted', undefined], 'a used token is not handed out again');
      assert.equal((await room.step(sale, at(1_000))).admitted.length, 0, 'b keeps the slot while holding');
      assert.ok(await room.releaseAdmission(sale.id, b?.ticket as string));
      assert.equal(await room.releaseAdmission(sale.id, b?.ticket as string), false);
      assert.deepEqual(
        (await room.step(sale, at(1_001))).admitted.map((entry) => entry.ticketId),
        [c?.ticket],
      );
    });

    test('claims made at once are each answered as if alone: a ticket once ok then replayed, an unknown ticket lapsed', async () => {
      const { store } = backend.store();
      const room = roomOn(store);
      const sale = testSale({ maxShoppers: 10, graceSeconds: 3_600 });
      const [a, b] = await joinAll(room, sale, ['a', 'b'], at(0));
      assert.deepEqual([a?.status, b?.status], ['admitted', 'admitted']);
      const claim = (ticketId: string) =>
        store.claim({ saleId: sale.id, ticketId, nowMs: at(1).getTime(), usedTtlMs: 60_000, shoppingMaxMs: 1_800_000 });
      // One turn of the event loop: the Redis store sends these four in one script call.
      const results = await Promise.all([
        claim(a?.ticket as string),
        claim(b?.ticket as string),
        claim(a?.ticket as string),
        claim('qt_unknown'),
      ]);
      assert.deepEqual(results, ['ok', 'ok', 'replayed', 'lapsed']);
      for (const ticket of [a?.ticket, b?.ticket]) {
        const view = await room.poll(sale, ticket as string, at(2));
        assert.deepEqual([view?.status, view?.admissionToken], ['admitted', undefined], 'a claimed ticket is shopping');
      }
    });

    test('the shopping limit takes back a slot that was never released', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 1, graceSeconds: 3_600 });
      const [a, b] = await joinAll(room, sale, ['a', 'b'], at(0));
      assert.equal((await room.consumeAdmission(a?.admissionToken as string, sale.id, 'a', at(10))).kind, 'ok');
      assert.equal((await room.step(sale, at(10 + 1_799))).admitted.length, 0);
      assert.deepEqual(
        (await room.step(sale, at(10 + 1_800))).admitted.map((entry) => entry.ticketId),
        [b?.ticket],
      );
    });

    test('once stock is covered by admitted buyers, everyone still waiting is told sold_out at once', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, stock: 3 });
      const views = await joinAll(room, sale, buyers(8), at(0));
      sale.maxShoppers = 10;
      assert.equal((await room.step(sale, at(1))).admitted.length, 3, 'no more admitted than units left');
      for (const view of views.slice(3)) {
        const polled = await room.poll(sale, view.ticket as string, at(2));
        assert.deepEqual([polled?.status, polled?.position, polled?.estimatedWaitSeconds], ['sold_out', null, null]);
        assert.equal(polled?.retryAfterSeconds, 1, 'the front of a sold-out line polls often, to see returned stock at once');
      }
      const first = await room.poll(sale, views[0]?.ticket as string, at(2));
      assert.equal((await room.consumeAdmission(first?.admissionToken as string, sale.id, 'buyer-1', at(2))).kind, 'ok');
      sale.stock = 2; // buyer-1 holds one unit; two admitted buyers remain for two units
      assert.equal((await room.poll(sale, views[3]?.ticket as string, at(3)))?.status, 'sold_out');
      sale.stock = 3; // buyer-1's hold expired and returned its unit
      await room.releaseAdmission(sale.id, views[0]?.ticket as string);
      assert.equal((await room.poll(sale, views[3]?.ticket as string, at(4)))?.status, 'admitted', 'the line resumes');
      assert.equal((await room.poll(sale, views[4]?.ticket as string, at(4)))?.status, 'sold_out');

      const none = testSale({ stock: 0 });
      assert.equal((await room.join(none, 'late', at(0))).status, 'sold_out');
    });

    test('after closesAt everyone is told closed, and no one joins', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 1, closesAt: at(100) });
      const [a, b] = await joinAll(room, sale, ['a', 'b'], at(0));
      assert.equal(a?.status, 'admitted');
      for (const view of [a, b]) {
        const polled = await room.poll(sale, view?.ticket as string, at(100));
        assert.deepEqual(polled, { ticket: view?.ticket, status: 'closed', position: null, estimatedWaitSeconds: null });
      }
      assert.deepEqual(await room.join(sale, 'c', at(100)), { ticket: null, status: 'closed', position: null, estimatedWaitSeconds: null });
    });

    test('forged, altered, expired, replayed, other-buyer and other-sale tokens are refused', async () => {
      const { store } = backend.store();
      const room = roomOn(store);
      const sale = testSale();
      const a = await room.join(sale, 'alice', at(0));
      const token = a.admissionToken as string;
      const [payload, signature] = token.split('.') as [string, string];
      const forged = roomOn(store, { secret: 'another_secret_0123456789abcdef_xyz' });
      const other = (await forged.join(testSale({ id: sale.id }), 'alice', at(0))).admissionToken as string;
      const altered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload.slice(4), 'base64url').toString()), e: T0 + 1e9 }));
      const invalid = [
        '',
        'garbage',
        `${payload}.${signature.slice(0, -1)}${signature.endsWith('A') ? 'B' : 'A'}`,
        `adm_${altered.toString('base64url')}.${signature}`,
        other,
        `${token}x`,
        'adm_'.padEnd(5_000, 'a'),
      ];
      for (const bad of invalid) assert.deepEqual(await room.consumeAdmission(bad, sale.id, 'alice', at(1)), { kind: 'invalid' }, bad);
      assert.deepEqual(await room.consumeAdmission(token, 'sale_other', 'alice', at(1)), { kind: 'wrong_sale' });
      assert.deepEqual(await room.consumeAdmission(token, sale.id, 'mallory', at(1)), { kind: 'wrong_buyer' });
      assert.deepEqual(await room.consumeAdmission(token, sale.id, 'alice', at(TOKEN_TTL_SECONDS)), { kind: 'expired' });
      assert.deepEqual(await room.consumeAdmission(token, sale.id, 'alice', at(1)), { kind: 'ok', ticketId: a.ticket });
      assert.deepEqual(await room.consumeAdmission(token, sale.id, 'alice', at(2)), { kind: 'replayed' });
    });

    test('500 concurrent joins from several nodes get 500 distinct places, 1 to 500', async () => {
      const made = backend.store();
      const nodes = [roomOn(made.store), ...(await Promise.all([1, 2, 3].map(async () => roomOn(await made.shared()))))];
      const sale = testSale({ maxShoppers: 0 });
      const joins = await Promise.all(buyers(500).map((buyer, i) => (nodes[i % nodes.length] as WaitingRoom).join(sale, buyer, at(1))));
      const positions = joins.map((view) => view.position as number).sort((x, y) => x - y);
      assert.deepEqual(
        positions,
        Array.from({ length: 500 }, (_, i) => i + 1),
      );
      assert.equal(new Set(joins.map((view) => view.ticket)).size, 500);
      const again = await Promise.all(
        buyers(500).map((buyer, i) => (nodes[(i + 1) % nodes.length] as WaitingRoom).join(sale, buyer, at(2))),
      );
      assert.deepEqual(
        again.map((view) => view.ticket),
        joins.map((view) => view.ticket),
      );
    });

    test('a long line keeps exact places as thousands are admitted and released', async () => {
      const room = fresh();
      const sale = testSale({ maxShoppers: 0, admitPerSecond: 1_000, graceSeconds: 3_600, stock: 10_000 });
      const views = await joinAll(room, sale, buyers(3_000), at(0));
      sale.maxShoppers = 10_000;
      for (const second of [1, 2]) await room.step(sale, at(second));
      for (const view of views.slice(2_000, 2_100)) await room.releaseAdmission(sale.id, view.ticket as string);
      sale.maxShoppers = 0; // polls admit no one, so places hold still
      const sample = [2_100, 2_500, 2_999];
      for (const i of sample) {
        assert.equal((await room.poll(sale, views[i]?.ticket as string, at(3)))?.position, i - 2_100 + 1);
      }
    });
  });
}
