// The package's public entry points are added as the backend is built.
export {};
