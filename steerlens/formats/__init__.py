"""File formats, each in one module: steerlens vector files (:mod:`.vector_file`), contrast pairs
and prompt lists (:mod:`.pairs`), and other tools' formats, the `steering-vectors` layout and
llama.cpp GGUF control vectors (:mod:`.interop`). Loading never executes code."""
