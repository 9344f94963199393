namespace px { int ops_placeholder = 0; }
