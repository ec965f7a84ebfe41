-- A fleet's shared state on PostgreSQL, schema 2: the members' shares of the fleet's room.
--
-- A member carves a share of what the fleet's windows still allow under the fleet's lock, and
-- then approves within it while holding only its own share's row: members spending within their
-- shares commit side by side instead of one after another. Every share counts in the fleet's
-- windows, whole, as spent now, until a member under the fleet's lock settles it (moves what was
-- spent from it into the fleet's buckets). The value is wardend's encoding of the share; the
-- row is written only under the member's lease, in the same transaction as the member's own
-- state.
CREATE TABLE warden_fleet_grant (
    member text  PRIMARY KEY,
    value  bytea NOT NULL
);
