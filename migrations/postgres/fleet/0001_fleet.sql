-- A fleet's shared state on PostgreSQL, schema 1: one schema per fleet ("warden:<fleet>"),
-- next to one schema per member ("warden:<fleet>:<member>") that holds the member's own state
-- (its warden_kv, its lease, its audit chain) exactly as a single wardend's. Applied by wardend
-- (store::postgres) inside one transaction under an advisory lock, and recorded in this
-- schema's warden_schema; never edited once released: a change is a new numbered file.

-- The fleet's one head row. A member that decides on the fleet's shared windows locks it
-- FOR UPDATE until its commit, so the decisions on shared rows are serialized; `seq` counts
-- the commits that wrote shared rows, so a member reads only what changed since its last look.
CREATE TABLE warden_fleet (
    id  smallint PRIMARY KEY CHECK (id = 1),
    seq bigint   NOT NULL
);
INSERT INTO warden_fleet (id, seq) VALUES (1, 0);

-- The fleet's shared namespaces, keyed as warden_kv is; `seq` is the head row's count at the
-- commit that last wrote the row.
CREATE TABLE warden_fleet_kv (
    ns    smallint NOT NULL,
    key   bytea    NOT NULL,
    value bytea    NOT NULL,
    seq   bigint   NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE INDEX warden_fleet_kv_seq ON warden_fleet_kv (seq);

-- Who has joined: a member's name is bound, at its first start, to its node id and the id of
-- its sealed seed, and neither binding changes afterwards (a wardend with another seed or node
-- under the same name is refused).
CREATE TABLE warden_member (
    name      text        PRIMARY KEY,
    node_id   text        NOT NULL UNIQUE,
    seed_id   text        NOT NULL UNIQUE,
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
