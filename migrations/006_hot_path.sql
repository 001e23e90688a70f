-- One hold per waiting-room admission: the admission token is spent by the hold that commits
-- with its ticket, never before, so a refused or crashed request leaves the token usable.
create unique index holds_one_per_ticket on holds (merchant_id, sale_id, admission_ticket)
  where admission_ticket is not null;
