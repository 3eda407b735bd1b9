// Not built yet: see the README. Exports nothing until the implementation lands.
export {};
