import { describe, expect, it } from 'vitest';
import { renderConfusion } from './confusion-svg';

describe('renderConfusion', () => {
  it('labels rows and columns with the class names and cells with their counts', () => {
    const svg = renderConfusion({ confusion: [[5, 1], [0, 3]], classNames: ['T-shirt/top', 'Trouser & co'], title: 'eval' });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.match(/>T-shirt\/top</g)).toHaveLength(2); // row and column label
    expect(svg).toContain('Trouser &amp; co');
    expect(svg).toContain('<title>T-shirt/top → Trouser &amp; co: 1</title>');
    expect(svg).toMatch(/>5<\/text>/);
    expect(svg).not.toMatch(/>0<\/text>/); // empty cells stay blank
    expect(svg.match(/<rect x=/g)).toHaveLength(4 + 1); // cells + frame
  });

  it('shades a cell by its share of the true class\'s row', () => {
    const svg = renderConfusion({ confusion: [[10, 0], [5, 5]], classNames: ['a', 'b'], title: '' });
    expect(svg).toContain('<title>a → a: 10</title>');
    expect(svg).toMatch(/fill="rgb\(0,140,0\)"><title>a → a: 10/); // a full row: darkest green
    expect(svg).toMatch(/fill="rgb\(255,128,128\)"><title>b → a: 5/); // half a row: mid red
  });

  it('drops names and counts when there are too many classes to read them, and uses indices for missing names', () => {
    const n = 100;
    const confusion = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
    const svg = renderConfusion({ confusion, classNames: [], title: 'imagenet' });
    expect(svg.match(/<rect x=/g)).toHaveLength(n * n + 1);
    expect(svg).not.toMatch(/>1<\/text>/);
    expect(svg).toContain('<title>99 → 99: 1</title>');
  });
});
