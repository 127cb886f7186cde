#!/usr/bin/env node
// A Tasker worker in JavaScript: runs the steps of namespaces declared
// external through the SQL worker contract (docs/workers.md), with the `pg`
// package: read step messages with pgmq.read_with_poll, start each with
// tasker.step_begin, run its handler, report with tasker.step_complete or
// tasker.step_fail, and keep a long step alive with tasker.step_heartbeat.
//
//   npm ci && node worker.js --database-url postgres://... diamond_workflow
//
// Handlers: demo.math (the reference workflows' arithmetic) and noop.
'use strict';

const { Client } = require('pg');

class StepError extends Error {
  constructor(kind, message, retryable = true) {
    super(message);
    this.kind = kind;
    this.retryable = retryable;
  }
}

// context.even_number for a root; else the parents' results in the order of
// their names.
function mathInputs(work) {
  const parents = work.parents || {};
  const names = Object.keys(parents).sort();
  if (names.length === 0) {
    const n = (work.context || {}).even_number;
    if (typeof n !== 'number') {
      throw new StepError('invalid_input', 'context.even_number is missing: the task needs an even integer', false);
    }
    if (!Number.isInteger(n) || Math.abs(n) > 2 ** 53) {
      throw new StepError('invalid_input', `context.even_number must be an integer, got ${n}`, false);
    }
    if (n % 2 !== 0) throw new StepError('invalid_input', `context.even_number must be even, got ${n}`, false);
    return [n];
  }
  return names.map((name) => {
    const r = parents[name];
    if (!r || typeof r.result !== 'number') {
      throw new StepError('invalid_input', `result of parent ${name} is not a number`, false);
    }
    return r.result;
  });
}

function demoMath(work) {
  const cfg = work.config || {};
  const inputs = mathInputs(work);
  const one = () => {
    if (inputs.length !== 1) {
      throw new StepError('bad_config', `step ${work.step_name}: op "${cfg.op}" takes one input, got ${inputs.length}`, false);
    }
    return inputs[0];
  };
  const operand = () => {
    if (typeof cfg.operand !== 'number') {
      throw new StepError('bad_config', `step ${work.step_name}: op "${cfg.op}" needs an operand`, false);
    }
    return cfg.operand;
  };
  let out;
  switch (cfg.op) {
    case 'square': out = one() ** 2; break;
    case 'add': out = one() + operand(); break;
    case 'multiply': out = one() * operand(); break;
    case 'divide': {
      const d = operand();
      if (d === 0) throw new StepError('bad_config', `step ${work.step_name}: divide by zero`, false);
      out = one() / d;
      break;
    }
    case 'average': out = inputs.reduce((a, b) => a + b, 0) / inputs.length; break;
    case 'multiply_all': out = inputs.reduce((a, b) => a * b, 1); break;
    default: throw new StepError('bad_config', `step ${work.step_name}: unknown op "${cfg.op}"`, false);
  }
  return { result: out };
}

// noop, as the Go one: {} or its config's "result".
const noop = (work) => {
  const cfg = work.config || {};
  return 'result' in cfg ? cfg.result : {};
};

const handlers = { 'demo.math': demoMath, noop };

function parseArgs(argv) {
  const a = { url: process.env.TASKER_DATABASE_URL, name: 'node-worker', vt: 30, batch: 10, poll: 5, namespaces: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--database-url') a.url = value();
    else if (flag === '--name') a.name = value(); // recorded on its transitions as external:NAME
    else if (flag === '--vt') a.vt = Number(value());
    else if (flag === '--batch') a.batch = Number(value());
    else if (flag === '--poll') a.poll = Number(value());
    else if (flag.startsWith('--')) throw new Error(`unknown flag ${flag}`);
    else a.namespaces.push(flag);
  }
  if (!a.url) throw new Error('--database-url or TASKER_DATABASE_URL is required');
  if (a.namespaces.length === 0) throw new Error('name at least one namespace (declared external = true)');
  for (const k of ['vt', 'batch', 'poll']) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw new Error(`--${k} must be a positive integer`);
  }
  return a;
}

async function main() {
  let a;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`worker.js: ${e.message}`);
    process.exit(2);
  }
  const queues = a.namespaces.map((ns) => `${ns}_queue`);
  const wait = Math.max(1, Math.floor(a.poll / queues.length));
  const db = new Client({ connectionString: a.url, application_name: a.name });
  const beats = new Client({ connectionString: a.url, application_name: a.name });
  await db.connect();
  await beats.connect();
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { stopping = true; });

  // Reports an outcome; a refusal (TK409: another attempt is current) is
  // logged and the work dropped: nothing changed.
  async function report(fn, call, value) {
    try {
      const r = await db.query(`SELECT status, reason FROM tasker.${fn}($1, $2, $3, $4, $5::jsonb)`,
        [...call, JSON.stringify(value)]);
      const { status, reason } = r.rows[0];
      if (status !== 'recorded' && status !== 'already recorded') console.error(`${call[0]} msg ${call[1]}: ${status}: ${reason}`);
    } catch (e) {
      console.error(`${call[0]} msg ${call[1]}: refused (${e.code}): ${e.message}`);
    }
  }

  async function step(q, msgId) {
    let work;
    try {
      work = (await db.query('SELECT * FROM tasker.step_begin($1, $2)', [q, msgId])).rows[0];
    } catch (e) {
      // TK404: the message is gone (its visibility timeout passed while
      // earlier messages of the batch ran, and another worker took it).
      if (!e.code) throw e; // not a refusal: the connection failed
      console.error(`${q} msg ${msgId}: not started (${e.code}): ${e.message}`);
      return;
    }
    if (work.status !== 'started') {
      console.error(`${q} msg ${msgId}: ${work.status}: ${work.reason}`);
      return;
    }
    const call = [q, msgId, work.step_uuid, work.attempt];
    // Keep the message invisible while the handler runs.
    const timer = setInterval(() => {
      beats.query('SELECT tasker.step_heartbeat($1, $2, $3, $4, $5)', [...call, a.vt])
        .catch((e) => console.error(`${q} msg ${msgId}: heartbeat refused (${e.code}): ${e.message}`));
    }, (a.vt * 1000) / 2);
    try {
      const handler = handlers[work.handler];
      if (!handler) throw new StepError('unknown_handler', `no handler "${work.handler}" in the Node worker`, false);
      const result = await handler(work);
      await report('step_complete', call, result === undefined ? null : result);
    } catch (e) {
      const se = e instanceof StepError ? e : new StepError('error', `${e.name}: ${e.message}`, true);
      await report('step_fail', call, { kind: se.kind, message: se.message, retryable: se.retryable });
    } finally {
      clearInterval(timer);
    }
  }

  console.error(`node worker ready: ${queues.join(', ')}`);
  while (!stopping) {
    for (const q of queues) {
      const r = await db.query('SELECT msg_id FROM pgmq.read_with_poll($1, $2, $3, $4, 100)', [q, a.vt, a.batch, wait]);
      for (const { msg_id: msgId } of r.rows) {
        if (stopping) break; // the message comes back after its visibility timeout
        await step(q, msgId);
      }
    }
  }
  await db.end();
  await beats.end();
}

main().catch((e) => {
  console.error(`worker.js: ${e.stack || e}`);
  process.exit(1);
});
