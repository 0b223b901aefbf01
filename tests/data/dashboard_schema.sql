-- The Architect Dashboard's own schema for the tables architect-cleanup touches
-- (as its migrations create them; used by the demo tree and the tests).

-- data/{env}/architect.db
CREATE TABLE IF NOT EXISTS task_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_type TEXT NOT NULL,
    task_data TEXT,
    priority INTEGER DEFAULT 0,
    status TEXT DEFAULT 'pending',
    assigned_node TEXT,
    assigned_worker TEXT,
    parent_id INTEGER REFERENCES task_queue(id) ON DELETE SET NULL,
    retries INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 3,
    error_message TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_task_queue_status ON task_queue(status);

CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    source TEXT,
    stack_trace TEXT,
    occurrence_count INTEGER DEFAULT 1,
    first_seen TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_seen TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    status TEXT DEFAULT 'open',
    resolved_at TIMESTAMP,
    resolved_by INTEGER
);

CREATE TABLE IF NOT EXISTS activity_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER,
    action TEXT NOT NULL,
    entity_type TEXT,
    entity_id INTEGER,
    details TEXT,
    ip_address TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
