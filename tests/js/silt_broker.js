// One real `silt broker` process ($SILT_BIN) with a fresh data dir and its
// listeners on 127.0.0.1 port 0; the bound Kafka port is read from the
// "broker ready" line on stderr, as tests/silt_harness.py does. stop() sends
// SIGTERM and requires exit code 0.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const LOG_LINES_MAX = 20_000;
const READY_RE = /broker ready.*kafka_listener="?([0-9.]+):(\d+)"?/;
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;

async function startSilt() {
  const bin = process.env.SILT_BIN;
  if (!bin || !fs.existsSync(bin)) {
    throw new Error(`SILT_BIN must name the silt binary (got ${bin}); tests/js/run sets it`);
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'silt-js-'));
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    // The readiness line is an INFO event; an inherited RUST_LOG=warn would hide it.
    if (!k.startsWith('SILT_') && k !== 'RUST_LOG') env[k] = v;
  }
  Object.assign(env, {
    NO_COLOR: '1',
    RUST_BACKTRACE: '1',
    SILT_STORAGE__DATA_DIR: path.join(root, 'data'),
    SILT_KAFKA__LISTEN: '127.0.0.1:0',
    SILT_HTTP__LISTEN: '127.0.0.1:0',
    SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS: '0',
    SILT_GROUPS__MIN_SESSION_TIMEOUT_MS: '1000',
  });
  const child = spawn(bin, ['broker'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const logTail = (n = 60) => lines.slice(-n).join('\n');
  const bootstrap = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no 'broker ready' line within ${READY_TIMEOUT_MS} ms\n${logTail()}`));
    }, READY_TIMEOUT_MS);
    for (const stream of [child.stdout, child.stderr]) {
      readline.createInterface({ input: stream }).on('line', (raw) => {
        const line = raw.replace(ANSI_RE, '');
        lines.push(line);
        if (lines.length > LOG_LINES_MAX) lines.splice(0, lines.length - LOG_LINES_MAX);
        const m = READY_RE.exec(line);
        if (m) {
          clearTimeout(timer);
          if (m[2] === '0') reject(new Error(`broker advertised port 0: ${line}`));
          resolve(`${m[1]}:${m[2]}`);
        }
      });
    }
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`silt exited (code ${code}, signal ${signal}) before 'broker ready'\n${logTail()}`));
    });
  });

  async function stop() {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`silt exited on its own (code ${child.exitCode})\n${logTail()}`);
    }
    child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS); });
    const result = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    fs.rmSync(root, { recursive: true, force: true });
    if (result === null) {
      child.kill('SIGKILL');
      throw new Error(`silt did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n${logTail()}`);
    }
    if (result.code !== 0) {
      throw new Error(`silt exited with code ${result.code} (signal ${result.signal}) on SIGTERM, expected 0\n${logTail()}`);
    }
  }

  return { bootstrap, stop, logTail };
}

/** Polls `cond` (sync or async) until true or `timeoutMs` passes, then fails naming `what`. */
async function waitUntil(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

module.exports = { startSilt, waitUntil };
