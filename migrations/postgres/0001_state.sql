-- Warden's state on PostgreSQL, schema 1. Applied by wardend (store::postgres) inside one
-- transaction under an advisory lock, and recorded in warden_schema; never edited once released:
-- a change is a new numbered file.

-- Every namespace of the store in one table, keyed as sled keys it: the namespace's byte, then
-- the key. bytea compares bytewise, so prefix scans and "last key" read in sled's order.
CREATE TABLE warden_kv (
    ns    smallint NOT NULL,
    key   bytea    NOT NULL,
    value bytea    NOT NULL,
    PRIMARY KEY (ns, key)
);

-- The one lease that decides which wardend may commit. Every commit locks this row FOR SHARE
-- and checks that the epoch is its own and unexpired by the server's clock; a takeover updates
-- the row (a new epoch), so it waits for commits in flight and every later commit of the old
-- holder fails.
CREATE TABLE warden_lease (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- A deposed wardend says here that it noticed and stopped (it may write nothing else). The
-- active one reconnects to the node a moment later, so the node's proxy retransmits whatever it
-- had handed the deposed one's connection while that one was paused.
CREATE TABLE warden_deposed (
    epoch      bigint      PRIMARY KEY,
    holder     text        NOT NULL,
    noticed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
