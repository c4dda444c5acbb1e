// Setup file of every test project: the temporary directories a test file made go when it ends.
import { afterAll } from 'vitest';
import { removeTempDirs } from './temp-dirs.js';

afterAll(removeTempDirs);
