-- Operator dashboard: a merchant's users (who sign in at /dashboard) and, in single-node mode,
-- their sessions (with Redis, sessions live there instead). Keyed by merchant_id first, as
-- every table is, so the schema stays distributable by merchant.
create table dashboard_users (
  merchant_id text collate "C" not null references merchants (merchant_id),
  id text collate "C" not null,
  email text not null check (length(email) between 3 and 254),
  -- scrypt$N$r$p$salt$key (base64url); never the password.
  password_hash text not null,
  created_at timestamptz not null default now(),
  primary key (merchant_id, id)
);
-- One account per email across merchants: the sign-in form asks for an email, not a merchant.
create unique index dashboard_users_email on dashboard_users (lower(email));

create table dashboard_sessions (
  -- SHA-256 of the cookie's token: a database leak reveals no usable session.
  token_hash bytea primary key,
  merchant_id text collate "C" not null,
  user_id text collate "C" not null,
  csrf_token text not null,
  expires_at timestamptz not null,
  foreign key (merchant_id, user_id) references dashboard_users (merchant_id, id) on delete cascade
);
create index dashboard_sessions_expiry on dashboard_sessions (expires_at);
