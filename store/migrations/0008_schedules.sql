-- Schedules: cron expressions that start tasks. Each fire is a task request
-- sent through orchestration_task_requests in the transaction that moves
-- the schedule's next fire time on, so a fire happens once however many
-- nodes check the schedule.

CREATE TABLE tasker.schedules (
    name            text PRIMARY KEY,
    -- the schedule's identity: a schedule deleted and created again under
    -- its name derives other request ids
    schedule_id     uuid NOT NULL UNIQUE,
    namespace       text NOT NULL,
    template        text NOT NULL,
    version         text NOT NULL DEFAULT '',
    cron            text NOT NULL,
    time_zone       text NOT NULL,
    context         jsonb NOT NULL,
    priority        int  NOT NULL DEFAULT 0,
    overlap         text NOT NULL CHECK (overlap IN ('skip', 'allow', 'cancel_previous')),
    catch_up        text NOT NULL CHECK (catch_up IN ('none', 'one', 'all')),
    catch_up_limit  int  NOT NULL CHECK (catch_up_limit > 0),
    -- config: declared by a node's configuration (written again at each
    -- start); api: created through the API or the CLI
    source          text NOT NULL CHECK (source IN ('config', 'api')),
    paused          bool NOT NULL DEFAULT false,
    next_fire_at    timestamptz NOT NULL,
    last_fire_at    timestamptz,
    last_request_id uuid,
    fired           bigint NOT NULL DEFAULT 0,
    skipped         bigint NOT NULL DEFAULT 0,
    missed          bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due ON tasker.schedules (next_fire_at) WHERE NOT paused;

-- What became of each fire time: sent (with its request id), skipped
-- because the previous task still ran, or missed while no node checked.
CREATE TABLE tasker.schedule_fires (
    schedule    text NOT NULL REFERENCES tasker.schedules ON DELETE CASCADE ON UPDATE CASCADE,
    fire_at     timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('on_time', 'caught_up', 'triggered', 'skipped', 'missed')),
    request_id  uuid,
    -- missed: how many fire times, from fire_at to last_fire_at
    count       int  NOT NULL DEFAULT 1,
    last_fire_at timestamptz,
    reason      text NOT NULL DEFAULT '',
    node_id     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_at, outcome)
);

CREATE INDEX schedule_fires_created ON tasker.schedule_fires (created_at);
