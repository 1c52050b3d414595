// npm sentiment@5.0.2 (AFINN-165 + emoji, 1-word negation) on its own fixtures, empty item skipped.
// usage: node eval_afinn_npm.js /path/to/sentiment-5.0.2/package
const P = process.argv[2];
const Sentiment = require(P + '/lib/index');
const s = new Sentiment();
let T = [0, 0, 0, 0];
for (const name of ['amazon', 'imdb', 'yelp']) {
  const items = require(P + '/test/fixtures/' + name + '.json').filter(x => x.class === 0 || x.class === 1);
  let zero = 0, strict = 0, ge0 = 0;
  for (const x of items) {
    const c = s.analyze(x.text).score;
    if (c === 0) zero++;
    if ((c > 0 && x.class === 1) || (c < 0 && x.class === 0)) strict++;
    if ((c >= 0) === (x.class === 1)) ge0++;
  }
  console.log(`${name}: n=${items.length} score==0: ${zero} acc(strict, 0 wrong)=${(strict/items.length).toFixed(4)} acc(>=0 pos)=${(ge0/items.length).toFixed(4)} decided=${(strict/(items.length-zero)).toFixed(4)}`);
  T[0] += items.length; T[1] += zero; T[2] += strict; T[3] += ge0;
}
console.log(`ALL: n=${T[0]} zero=${T[1]} strict=${(T[2]/T[0]).toFixed(4)} ge0=${(T[3]/T[0]).toFixed(4)} decided=${(T[2]/(T[0]-T[1])).toFixed(4)}`);
