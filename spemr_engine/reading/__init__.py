"""Reading: the LAMOST MRS reader and label catalogs."""
