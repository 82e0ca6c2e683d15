import { describe, expect, it } from 'vitest';
import { learningRate, type LrScheduleOptions } from './schedule';

const base: LrScheduleOptions = { lr: 0.1, schedule: 'paper', warmupSteps: 0, totalSteps: 1000, stepsPerEpoch: 10, stepEpochs: 30, gamma: 0.1 };

describe('learning-rate schedules', () => {
  it('paper: x0.96 every 8 epochs', () => {
    expect(learningRate(base, 0)).toBe(0.1);
    expect(learningRate(base, 79)).toBe(0.1);
    expect(learningRate(base, 80)).toBeCloseTo(0.096, 12);
    expect(learningRate(base, 160)).toBeCloseTo(0.1 * 0.96 ** 2, 12);
  });
  it('step: x gamma every stepEpochs', () => {
    const o = { ...base, schedule: 'step' as const, stepEpochs: 2 };
    expect(learningRate(o, 19)).toBe(0.1);
    expect(learningRate(o, 20)).toBeCloseTo(0.01, 12);
  });
  it('cosine: from lr to 0 over the run, after warm-up', () => {
    const o = { ...base, schedule: 'cosine' as const, warmupSteps: 100 };
    expect(learningRate(o, 0)).toBeCloseTo(0.1 / 101, 12);
    expect(learningRate(o, 99)).toBeCloseTo((0.1 * 100) / 101, 12);
    expect(learningRate(o, 100)).toBeCloseTo(0.1, 12);
    expect(learningRate(o, 550)).toBeCloseTo(0.05, 12);
    expect(learningRate(o, 1000)).toBeCloseTo(0, 12);
  });
});
