#!/usr/bin/env node
// Generates data/tiny-corpus.txt: a small synthetic English corpus (simple sentences from a fixed grammar,
// seeded), so the demo model has structure to learn and the repository ships no third-party text.
// Usage: node scripts/make-corpus.js [bytes=262144] > data/tiny-corpus.txt
const target = Number(process.argv[2] ?? 262144);
let state = 20261128;
const rand = () => {
  state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
  return state / 2 ** 32;
};
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const subjects = [
  'the model',
  'the worker',
  'a checkpoint',
  'the pipeline',
  'the optimizer',
  'each rank',
  'the scheduler',
  'the old server',
  'a small cat',
  'the river',
  'my neighbour',
  'the teacher',
  'a quiet child',
  'the farmer',
];
const verbs = [
  'saves',
  'loads',
  'finds',
  'keeps',
  'watches',
  'carries',
  'reads',
  'writes',
  'remembers',
  'counts',
  'follows',
  'opens',
];
const objects = [
  'the last step',
  'a heavy stone',
  'every file',
  'the bright lamp',
  'a long letter',
  'the green field',
  'its own shard',
  'the manifest',
  'seven apples',
  'the morning train',
  'a warm loaf of bread',
  'the evening news',
];
const adverbs = [
  'slowly',
  'again',
  'before dawn',
  'without a word',
  'at noon',
  'twice',
  'with care',
  'in the rain',
  'after the storm',
  'every day',
];
const joins = ['and then', 'because', 'while', 'but', 'so', 'until'];
function clause() {
  const parts = [pick(subjects), pick(verbs), pick(objects)];
  if (rand() < 0.6) parts.push(pick(adverbs));
  return parts.join(' ');
}
function sentence() {
  let s = clause();
  if (rand() < 0.45) s += `, ${pick(joins)} ${clause()}`;
  s = s[0].toUpperCase() + s.slice(1);
  return s + (rand() < 0.1 ? '?' : rand() < 0.2 ? '!' : '.');
}
let out = '';
while (out.length < target) {
  const n = 3 + Math.floor(rand() * 5);
  const para = Array.from({ length: n }, sentence).join(' ');
  out += para + '\n\n';
}
process.stdout.write(out.slice(0, target));
