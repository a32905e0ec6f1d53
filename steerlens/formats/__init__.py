"""steerlens' own files, each in one module: vector files (:mod:`.vector_file`, safetensors plus
versioned JSON) and contrast pairs / prompt lists (:mod:`.pairs`, JSONL). Loading never executes
code. Every file steerlens reads from a user path and every file it writes goes through
:mod:`.safe_io` (regular files only, a size limit; atomic writes). Other tools' formats live in
:mod:`steerlens.interop`."""
