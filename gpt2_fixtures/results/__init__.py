"""Result files as plain JSON: load, validate, merge, gate, report; never torch or pytest."""
