-- data/assigner/assigner.db, after the dashboard's archive migration.
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    content TEXT NOT NULL,
    source TEXT,
    priority INTEGER DEFAULT 0,
    status TEXT DEFAULT 'pending',
    assigned_session TEXT,
    target_session TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    assigned_at TIMESTAMP,
    completed_at TIMESTAMP,
    response TEXT,
    error TEXT,
    retry_count INTEGER DEFAULT 0,
    archived INTEGER DEFAULT 0,
    archived_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_prompts_status ON prompts(status);
