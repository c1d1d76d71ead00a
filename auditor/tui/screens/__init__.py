"""One screen per view: runs, variants, categories, items, item, compare, help."""
