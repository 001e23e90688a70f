/**
 * Every word the hosted sale page shows, in one place: a translation is a copy of this file
 * with the values changed. `{name}` marks a value filled in.
 */
export const en = {
  lang: 'en',
  testMode: 'Test mode: no real card is charged.',
  skip: 'Skip to content',
  soldBy: 'Sold by {name}',
  price: 'Price',
  available: 'Available',
  availableCount: '{count} left',
  soldOutItem: 'Sold out',
  // The sale page
  opensIn: 'The sale opens at {time}.',
  opensCountdown: 'Opens in {countdown}',
  openNow: 'The sale is open.',
  joinLine: 'Join the line',
  joinEarly: 'Join the line now: everyone who joins before the opening gets a random place, so there is no need to rush.',
  perBuyerLimit: 'Up to {count} per buyer.',
  // The line
  waitingTitle: 'You are in line',
  position: 'Your place in line: {position}',
  positionBeforeOpen: 'Places are drawn at random when the sale opens.',
  estimatedWait: 'Estimated wait: {wait}',
  waitUnknown: 'Estimated wait: a few moments',
  progress: 'Progress through the line',
  keepTabOpen: 'Keep this page open; it updates by itself. Reloading it keeps your place.',
  checkAgain: 'Check now',
  leaveLine: 'Leave',
  // Admitted
  admittedTitle: 'It is your turn',
  chooseQuantities: 'Choose how many you want, then hold them while you pay.',
  quantityOf: 'Quantity of {name}',
  holdButton: 'Hold my tickets',
  admittedExpires: 'Choose within a few minutes, or your turn passes to the next buyer.',
  // The hold
  holdTitle: 'Your items are held',
  holdExpiresAt: 'Held for you until {time}.',
  holdCountdown: 'Time left: {countdown}',
  total: 'Total',
  payTitle: 'Pay by card',
  cardNumber: 'Card number',
  cardExpiry: 'Expiry (MM/YY)',
  cardCvc: 'Security code (CVC)',
  payButton: 'Pay {amount}',
  paying: 'Paying…',
  cancelHold: 'Give up my items',
  needsScript: 'Paying needs JavaScript: your card goes straight to the payment provider, never through this site.',
  testCards:
    'Test cards (any future expiry, any CVC): 4242 4242 4242 4242 succeeds; 4000 0000 0000 0002 is declined; 4000 0000 0000 9995 has insufficient funds; 4000 0000 0000 0119 times out.',
  // The receipt
  receiptTitle: 'Thank you: you have paid',
  orderId: 'Order number',
  paidAmount: 'Paid',
  continueToMerchant: 'Continue to {name}',
  processingTitle: 'Your payment is being confirmed',
  processingBody: 'The payment provider has not answered yet. This page checks again by itself; you will not be charged twice.',
  // Endings and refusals
  notOpenTitle: 'The sale has not opened yet',
  soldOutTitle: 'Sold out',
  soldOutBody: 'Everything has been sold. If held items are given back, buyers still in line are let in first.',
  closedTitle: 'The sale has closed',
  closedBody: 'This sale is no longer selling.',
  holdExpiredTitle: 'Your hold has expired',
  holdExpiredBody: 'The items went back on sale. You can join the line again.',
  joinAgain: 'Join the line again',
  declined: 'Your card was declined ({reason}). Your items are still held: try another card.',
  providerUnavailable: 'The payment provider is unavailable right now. Nothing was charged; try again in a moment.',
  cardInvalid: 'Check the card details: {reason}',
  lineLost: 'Your place in line lapsed because this page stopped checking. You can join again.',
  buyerLimit: 'That is more than one buyer may have: up to {count} in all.',
  chooseSomething: 'Choose at least one item.',
  itemsGone: 'Not enough left of what you chose: {reason}',
  turnExpired: 'Your turn passed before you held any items. You can join the line again.',
  sessionExpired: 'This page has expired. Reload it and try again.',
  notFoundTitle: 'No such sale',
  notFoundBody: 'This link does not lead to a sale that is on sale here.',
  errorTitle: 'Something went wrong',
  tryAgain: 'Try again',
  busy: 'We are very busy. Please try again in a moment.',
  seconds: '{count} s',
  minutes: '{count} min',
  hours: '{count} h',
};

export type Strings = typeof en;
export type StringKey = keyof Strings;

/** Fills `{name}` placeholders; a missing value stays visible rather than vanishing. */
export function format(template: string, values: Record<string, string | number> = {}): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in values ? String(values[name]) : whole));
}
