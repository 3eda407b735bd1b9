// The chunk worker is a worker-thread entry point of @drkit/core: it exports nothing.
export {};
