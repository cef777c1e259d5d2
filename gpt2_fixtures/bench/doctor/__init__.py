"""`gpt2-bench doctor`: ``checks`` (pure rules), ``facts`` (what the machine says), ``noise`` (a
probe of the real step) and ``cli`` (the table and the subcommand); docs/ci.md."""
