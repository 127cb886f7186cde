-- Tasker's own tables. Every state column mirrors the typed states of
-- package workflow; the CHECK constraints keep the two in step.

CREATE TABLE tasker.templates (
    template_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text NOT NULL,
    name          text NOT NULL,
    version       text NOT NULL,
    -- numeric parts of the semantic version, so "newest" is an index scan
    version_major int  NOT NULL,
    version_minor int  NOT NULL,
    version_patch int  NOT NULL,
    version_pre   text NOT NULL DEFAULT '',
    description   text NOT NULL DEFAULT '',
    hash          text NOT NULL,
    definition    jsonb NOT NULL,
    source        text NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name, version)
);

CREATE INDEX templates_newest ON tasker.templates
    (namespace, name, version_major DESC, version_minor DESC, version_patch DESC);

CREATE TABLE tasker.tasks (
    task_uuid      uuid PRIMARY KEY,
    request_id     uuid NOT NULL UNIQUE,
    correlation_id uuid NOT NULL,
    template_id    bigint NOT NULL REFERENCES tasker.templates,
    namespace      text NOT NULL,
    name           text NOT NULL,
    version        text NOT NULL,
    state          text NOT NULL CHECK (state IN
        ('pending', 'in_progress', 'complete', 'error', 'cancelled', 'resolved_manually')),
    context        jsonb NOT NULL,
    priority       int  NOT NULL DEFAULT 0,
    requested_by   text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);

CREATE INDEX tasks_created ON tasker.tasks (created_at DESC);
CREATE INDEX tasks_state_created ON tasker.tasks (state, created_at DESC);
CREATE INDEX tasks_namespace_created ON tasker.tasks (namespace, name, created_at DESC);

CREATE TABLE tasker.steps (
    step_uuid        uuid PRIMARY KEY,
    task_uuid        uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
    name             text NOT NULL,
    position         int  NOT NULL,
    namespace        text NOT NULL,
    handler          text NOT NULL,
    config           jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL CHECK (state IN
        ('pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'complete', 'error',
         'cancelled', 'resolved_manually')),
    attempts         int NOT NULL DEFAULT 0,
    -- attempts made before the last operator retry; the step has
    -- max_attempts attempts on top of this
    attempts_base    int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL,
    retryable        bool NOT NULL,
    timeout_ms       bigint NOT NULL,
    backoff_base_ms  bigint NOT NULL DEFAULT 0,
    backoff_max_ms   bigint NOT NULL DEFAULT 0,
    -- parents not yet complete or resolved; the step is ready at zero
    waiting_parents  int NOT NULL,
    -- the attempt whose outcome a worker has recorded and orchestration has
    -- not applied yet; NULL while no outcome is waiting
    outcome_attempt  int,
    outcome_ok       bool,
    result           jsonb,
    error            jsonb,
    retry_after_ms   bigint,
    enqueued_at      timestamptz,
    last_attempted_at timestamptz,
    next_attempt_at  timestamptz,
    finished_at      timestamptz,
    duration_ms      bigint,
    UNIQUE (task_uuid, name)
);

CREATE TABLE tasker.step_edges (
    task_uuid uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
    from_step uuid NOT NULL REFERENCES tasker.steps ON DELETE CASCADE,
    to_step   uuid NOT NULL REFERENCES tasker.steps ON DELETE CASCADE,
    PRIMARY KEY (from_step, to_step)
);

CREATE INDEX step_edges_to ON tasker.step_edges (to_step);
CREATE INDEX step_edges_task ON tasker.step_edges (task_uuid);

CREATE TABLE tasker.task_transitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_uuid  uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
    from_state text,
    to_state   text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    node_id    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX task_transitions_task ON tasker.task_transitions (task_uuid, id);

CREATE TABLE tasker.step_transitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step_uuid  uuid NOT NULL REFERENCES tasker.steps ON DELETE CASCADE,
    task_uuid  uuid NOT NULL REFERENCES tasker.tasks ON DELETE CASCADE,
    from_state text,
    to_state   text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    attempt    int  NOT NULL DEFAULT 0,
    node_id    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX step_transitions_task ON tasker.step_transitions (task_uuid, id);
CREATE INDEX step_transitions_step ON tasker.step_transitions (step_uuid, id);

CREATE TABLE tasker.rejected_requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  uuid,
    msg_id      bigint NOT NULL,
    payload     text NOT NULL,
    reason      text NOT NULL,
    node_id     text NOT NULL DEFAULT '',
    rejected_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rejected_requests_time ON tasker.rejected_requests (rejected_at DESC);
