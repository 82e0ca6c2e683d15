import { describe, it, expect } from 'vitest';
import { PACKAGE } from './index';
describe('smoke', () => { it('loads', () => expect(PACKAGE).toBe('@googlenet/model')); });
