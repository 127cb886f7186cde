-- The W3C trace context (traceparent, tracestate) a task's request carried
-- in its headers, as the headers object every step and result message of the
-- task carries on; NULL when the request came without one.
ALTER TABLE tasker.tasks ADD COLUMN trace jsonb;
