"""steerlens' own files, each in one module: vector files (:mod:`.vector_file`, safetensors plus
versioned JSON) and contrast pairs / prompt lists (:mod:`.pairs`, JSONL). Loading never executes
code. Other tools' formats live in :mod:`steerlens.interop`."""
