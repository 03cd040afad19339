// tests/gateway/openai_client.mjs — the official `openai` npm package against
// a running moegate gateway (run by tests/gateway/suite.sh).
//
//   NODE_DIR=... GW_URL=https://127.0.0.1:PORT GW_KEY=... GW_MODEL=finance \
//   GW_BASE_MODEL=... NODE_EXTRA_CA_CERTS=ca.crt node openai_client.mjs
//
// Prints "ok   NAME" / "FAIL NAME: why" per case and exits 1 when any failed.
// Retries are off: every answer must be right the first time.
import { createRequire } from 'module';
import https from 'https';

const require = createRequire(process.env.NODE_DIR + '/');
const mod = require('openai');
const OpenAI = mod.OpenAI || mod.default || mod;

const url = process.env.GW_URL;
const key = process.env.GW_KEY;
const model = process.env.GW_MODEL;
const baseModel = process.env.GW_BASE_MODEL;
let failed = 0;

async function check(name, fn) {
    try {
        await fn();
        console.log(`ok   openai: ${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL openai: ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
    }
}

function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}

const client = new OpenAI({ apiKey: key, baseURL: url + '/v1', maxRetries: 0, timeout: 60000 });

await check('chat completion', async () => {
    const r = await client.chat.completions.create({
        model,
        messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hello.' }],
        max_tokens: 8,
        temperature: 0,
        seed: 7,
    });
    assert(r.object === 'chat.completion', 'object ' + r.object);
    assert(r.id.startsWith('chatcmpl-'), 'id ' + r.id);
    assert(r.model === model, 'model ' + r.model);
    assert(r.choices.length === 1 && r.choices[0].message.role === 'assistant', 'choices');
    assert(typeof r.choices[0].message.content === 'string', 'content');
    assert(['stop', 'length'].includes(r.choices[0].finish_reason), 'finish_reason ' + r.choices[0].finish_reason);
    assert(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0, 'usage');
    assert(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, 'total');
});

await check('seeded greedy answers are identical', async () => {
    const ask = () => client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Count to three.' }], max_tokens: 6, temperature: 0 });
    const a = await ask(), b = await ask();
    assert(a.choices[0].message.content === b.choices[0].message.content, 'differ');
});

await check('streaming chat with usage', async () => {
    const stream = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Tell a story.' }], max_tokens: 10, stream: true,
        stream_options: { include_usage: true },
    });
    let text = '', role = null, finish = null, usage = null, chunks = 0;
    for await (const chunk of stream) {
        chunks++;
        assert(chunk.object === 'chat.completion.chunk', 'object ' + chunk.object);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
            if (c.delta.role) role = c.delta.role;
            if (c.delta.content) text += c.delta.content;
            if (c.finish_reason) finish = c.finish_reason;
        }
    }
    assert(role === 'assistant', 'role');
    assert(finish === 'length' || finish === 'stop', 'finish ' + finish);
    assert(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 10, 'usage ' + JSON.stringify(usage));
    assert(chunks >= 3, 'chunks ' + chunks);
});

await check('completions', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 5 });
    assert(r.object === 'text_completion', 'object');
    assert(typeof r.choices[0].text === 'string', 'text');
    assert(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 5, 'usage');
});

await check('streaming completions', async () => {
    const stream = await client.completions.create({ model, prompt: 'Hello', max_tokens: 4, stream: true });
    let finish = null;
    for await (const chunk of stream)
        for (const c of chunk.choices) if (c.finish_reason) finish = c.finish_reason;
    assert(finish === 'length' || finish === 'stop', 'finish ' + finish);
});

await check('models list', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert(ids.includes(model) && ids.includes(baseModel), 'ids ' + ids.join(','));
    assert(!ids.includes('medical'), 'lists a domain the tenant may not use');
});

await check('models retrieve', async () => {
    const m = await client.models.retrieve(model);
    assert(m.id === model && m.object === 'model', JSON.stringify(m));
});

await check('wrong key is AuthenticationError 401', async () => {
    const bad = new OpenAI({ apiKey: 'mg_wrong', baseURL: url + '/v1', maxRetries: 0 });
    try {
        await bad.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }] });
        throw new Error('no error');
    } catch (e) {
        assert(e instanceof OpenAI.AuthenticationError, 'class ' + (e && e.constructor && e.constructor.name));
        assert(e.status === 401, 'status ' + e.status);
        assert(e.headers && (e.headers['x-request-id'] || (e.headers.get && e.headers.get('x-request-id'))), 'x-request-id');
    }
});

await check('unknown model is NotFoundError 404', async () => {
    try {
        await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
        throw new Error('no error');
    } catch (e) {
        assert(e instanceof OpenAI.NotFoundError, 'class ' + (e && e.constructor && e.constructor.name));
        assert(e.status === 404 && e.code === 'model_not_found', 'status ' + e.status + ' code ' + e.code);
    }
});

await check('a domain the tenant may not use is PermissionDeniedError 403', async () => {
    try {
        await client.chat.completions.create({ model: 'medical', messages: [{ role: 'user', content: 'x' }] });
        throw new Error('no error');
    } catch (e) {
        assert(e instanceof OpenAI.PermissionDeniedError, 'class ' + (e && e.constructor && e.constructor.name));
    }
});

await check('bad parameter is BadRequestError 400 naming it', async () => {
    try {
        await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], temperature: 7 });
        throw new Error('no error');
    } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, 'class ' + (e && e.constructor && e.constructor.name));
        assert(e.param === 'temperature', 'param ' + e.param);
    }
});

// keep-alive: a second request reuses the socket of a streamed response
function post(agent, path, body) {
    return new Promise((resolve, reject) => {
        const u = new URL(url + path);
        const req = https.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent,
            headers: { 'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json' } }, (res) => {
            let data = '';
            res.setEncoding('utf8');
            res.on('data', (d) => data += d);
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, data, reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end(JSON.stringify(body));
    });
}

await check('keep-alive socket reused after a streamed response', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const a = await post(agent, '/v1/chat/completions',
        { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, stream: true });
    assert(a.status === 200 && a.data.trimEnd().endsWith('data: [DONE]'), 'stream ' + a.status);
    assert(a.headers['connection'] !== 'close', 'stream response closes the connection');
    const b = await post(agent, '/v1/chat/completions',
        { model, messages: [{ role: 'user', content: 'again' }], max_tokens: 3 });
    assert(b.status === 200, 'second status ' + b.status);
    assert(b.reused === true, 'second request did not reuse the socket');
    const c = await post(agent, '/v1/completions', { model, prompt: 'x', max_tokens: 2, stream: true });
    assert(c.status === 200 && c.reused === true, 'third');
    agent.destroy();
});

process.exit(failed ? 1 : 0);
