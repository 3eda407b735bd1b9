export * from './drkit-error.js';
