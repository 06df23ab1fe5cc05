package distinctkeys

// Fresh is fresh, for tests.
var Fresh = fresh
