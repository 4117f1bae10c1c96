-- The generations of the read model, in schema public of the read database.
--
-- Each generation is a schema holding a complete projection (the set in
-- migrations/read, applied inside it). Readers and the query servers'
-- projectors use the one `live` generation; `orderctl rebuild` fills a
-- `building` one beside it, then switches in one transaction (with a NOTIFY on
-- channel `projection_generation`) that retires the old one. A generation
-- whose verification failed, or that was abandoned, is `failed`. Retired and
-- failed schemas are dropped by `orderctl rebuild --drop-old` or by the next
-- rebuild; their rows stay, so generation numbers and schemas are never reused.
--
-- This directory has a migrator of its own (run with search_path public), not
-- part of the per-schema set.

CREATE TABLE projection_generation (
    generation     integer     PRIMARY KEY CHECK (generation >= 1),
    schema_name    text        NOT NULL UNIQUE,
    state          text        NOT NULL
        CHECK (state IN ('building', 'live', 'retired', 'failed')),
    -- Where a rebuild reads history: the topic from its start, or the event store.
    source         text        NOT NULL CHECK (source IN ('topic', 'store')),
    -- Consumer group of the rebuild's projector (none for the first generation).
    consumer_group text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    switched_at    timestamptz,
    retired_at     timestamptz,
    dropped_at     timestamptz,
    -- Why a generation failed.
    note           text
);

-- At most one live and one building generation.
CREATE UNIQUE INDEX projection_generation_one_live
    ON projection_generation ((true)) WHERE state = 'live';
CREATE UNIQUE INDEX projection_generation_one_building
    ON projection_generation ((true)) WHERE state = 'building';
