// generator: see helper
