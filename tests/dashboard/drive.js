// Drives the dashboard in headless Chromium (playwright-core, no bundled browser) for
// tests/dashboard.rs. Environment: URL (the admin listener's `/`), TOKEN, KEY (an API key),
// MODEL, NODES (comma-separated names), CHROMIUM (the browser), SCREENSHOT (where to save it).
// Prints one JSON line of what it saw; any failed expectation throws (exit code 1).
'use strict';

const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

function expect(condition, what) {
  if (!condition) throw new Error(`expected ${what}`);
}

(async () => {
  const nodes = env('NODES').split(',');
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const seen = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // Chromium logs every refused fetch; the 401s this test provokes are expected.
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().includes('status of 401')) problems.push(`console: ${m.text()}`);
    });

    // Without a token: the sign-in, and no data anywhere.
    const served = await page.goto(env('URL'));
    const headers = served.headers();
    seen.policy = headers['content-security-policy'];
    expect(/script-src 'self'/.test(seen.policy) && !/unsafe-inline/.test(seen.policy), 'a policy without inline script');
    expect(headers['x-content-type-options'] === 'nosniff', 'nosniff');
    await page.waitForSelector('#sign-in-form', { state: 'visible' });
    expect(await page.isHidden('#board'), 'the board hidden before sign-in');
    const body = await page.textContent('body');
    for (const name of nodes) expect(!body.includes(name), `no node name (${name}) before sign-in`);
    seen.unauthorized_status = await page.evaluate(async () => (await fetch('/admin/mesh')).status);
    expect(seen.unauthorized_status === 401, '/admin/mesh to refuse a request without the token');

    // A wrong token is refused and leaves nothing behind.
    await page.fill('#token', 'not-the-token');
    await page.click('#sign-in-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('sign-in-error').textContent.length > 0);
    expect(await page.isHidden('#board'), 'the board hidden after a wrong token');
    expect(await page.evaluate(() => sessionStorage.length) === 0, 'a refused token not kept');

    // Sign in: the token goes to sessionStorage, never into the URL.
    await page.fill('#token', env('TOKEN'));
    await page.click('#sign-in-form button[type=submit]');
    await page.waitForSelector('#board', { state: 'visible' });
    expect(!page.url().includes(env('TOKEN')), 'the token not in the URL');
    expect(await page.evaluate(() => sessionStorage.getItem('ganglion.admin-token')) === env('TOKEN'),
      'the token in sessionStorage');

    // Topology: every node, and a link with its RTT between every pair.
    await page.waitForFunction((count) =>
      document.querySelectorAll('#nodes .node[data-node]:not(.unreachable)').length === count
      && document.querySelectorAll('#topology line.link').length === count * (count - 1) / 2,
    nodes.length, { timeout: 30000 });
    seen.nodes = await page.$$eval('#nodes .node[data-node]', (cards) => cards.map((c) => c.dataset.node).sort());
    expect(JSON.stringify(seen.nodes) === JSON.stringify([...nodes].sort()), `the nodes ${nodes}`);
    seen.links = await page.$$eval('#topology line.link', (lines) => lines.map((l) => l.dataset.link).sort());
    seen.rtts = await page.$$eval('#topology text.rtt', (labels) => labels.map((l) => l.textContent));
    expect(seen.rtts.length === seen.links.length && seen.rtts.every((t) => /^\d+\.\d\d ms$/.test(t)),
      'an RTT label on every link');
    seen.not_hosted = await page.$$eval('#nodes li.not-hosted', (items) => items.map((i) => i.textContent));

    const fact = (name) => page.textContent(`#try-facts [data-fact="${name}"]`);

    // A refused key: its error shows in the box, and among the mesh's errors with its node.
    await page.waitForFunction((model) =>
      [...document.querySelectorAll('#try-model option')].some((o) => o.value === model), env('MODEL'));
    await page.selectOption('#try-model', env('MODEL'));
    await page.fill('#try-key', 'not-a-key');
    await page.click('#try-send');
    await page.waitForSelector('#try-facts [data-fact=error]');
    seen.refused = await fact('error');
    expect(seen.refused.startsWith('unauthenticated:'), `unauthenticated, not ${seen.refused}`);
    await page.waitForSelector('#errors tr[data-code=unauthenticated]', { timeout: 5000 });
    seen.error_row = await page.$eval('#errors tr[data-code=unauthenticated]',
      (row) => [...row.cells].slice(1, 4).map((c) => c.textContent));

    // Try it: the answer streams in, and its route, cache status and Neurons show beside it.
    await page.fill('#try-key', env('KEY'));
    await page.fill('#try-prompt', 'Name one colour.');
    await page.fill('#try-max-tokens', '12');
    await page.click('#try-send');
    await page.waitForSelector('#try-facts [data-fact=route]', { timeout: 120000 });
    seen.try = {
      output: await page.textContent('#try-output'),
      route: await fact('route'),
      executed_by: await fact('executed by'),
      cache: await fact('cache'),
      neurons: await fact('neurons'),
      id: await fact('request'),
    };
    expect(seen.try.output.length > 0, 'generated text');
    expect(parseFloat(seen.try.neurons) > 0, `Neurons charged, not ${seen.try.neurons}`);

    // The request appears among the recent routes with the same route.
    const row = `#routes tr[data-id="${seen.try.id}"]`;
    await page.waitForSelector(row, { timeout: 5000 });
    seen.row_route = await page.textContent(`${row} td.route`);
    expect(seen.row_route === seen.try.route, `the recent route ${seen.row_route} to be ${seen.try.route}`);
    // The executor charged it; the mesh's counters reach the entry node with the next adverts.
    await page.waitForSelector('#accounts .account[data-account]', { timeout: 15000 });
    seen.accounts = await page.$$eval('#accounts .account', (rows) => rows.map((r) => ({
      account: r.dataset.account, level: r.dataset.level,
    })));
    seen.traffic_models = await page.$$eval('#traffic tbody tr', (rows) => rows.map((r) => r.dataset.model));
    expect(seen.traffic_models.includes(env('MODEL')), 'the model among the traffic figures');

    await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });

    // Signing out forgets the token and the data.
    await page.click('#sign-out');
    await page.waitForSelector('#sign-in-form', { state: 'visible' });
    expect(await page.evaluate(() => sessionStorage.length) === 0, 'the token forgotten');
    expect(await page.$$eval('#nodes .node', (cards) => cards.length) === 0, 'no node shown after sign-out');
    expect(await page.$$eval('#routes tbody tr, #accounts .account', (rows) => rows.length) === 0, 'no request or account after sign-out');
    expect(await page.inputValue('#try-key') === '', 'the API key forgotten');
    const after = await page.textContent('body');
    for (const name of nodes) expect(!after.includes(name), `no node name (${name}) after sign-out`);
    seen.problems = problems;
    expect(problems.length === 0, `no page errors (${problems.join('; ')})`);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
