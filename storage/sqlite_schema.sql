-- revision: 0011
-- Written by `python -m storage.sqlite_schema`; do not edit.
-- statement --
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)
-- statement --
CREATE TABLE conversation (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	title VARCHAR(200) NOT NULL, 
	model VARCHAR(200), 
	system_prompt TEXT, 
	params JSON, 
	pinned BOOLEAN DEFAULT 0 NOT NULL, 
	archived BOOLEAN DEFAULT 0 NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, kind VARCHAR(16) DEFAULT 'chat' NOT NULL, current_leaf_id CHAR(32), 
	PRIMARY KEY (id)
)
-- statement --
CREATE TABLE message (
	id CHAR(32) NOT NULL, 
	conversation_id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	position INTEGER NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	content TEXT DEFAULT '' NOT NULL, 
	reasoning TEXT, 
	provider VARCHAR(200), 
	model VARCHAR(200), 
	model_version VARCHAR(200), 
	params JSON, 
	input_tokens INTEGER, 
	output_tokens INTEGER, 
	reasoning_tokens INTEGER, 
	ttft_ms INTEGER, 
	duration_ms INTEGER, 
	finish_reason VARCHAR(32), 
	error TEXT, 
	created_at DATETIME NOT NULL, feedback VARCHAR(8), tool_calls JSON, cached_input_tokens INTEGER, cache_write_tokens INTEGER, usage_estimated BOOLEAN, instance_id VARCHAR(64), attachment_count INTEGER DEFAULT '0' NOT NULL, parent_id CHAR(32) REFERENCES message (id), request_id VARCHAR(200), sdk_version VARCHAR(64), system_prompt_sha256 VARCHAR(16), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_message_conversation_position UNIQUE (conversation_id, position), 
	CONSTRAINT fk_message_conversation FOREIGN KEY(conversation_id) REFERENCES conversation (id) ON DELETE CASCADE
)
-- statement --
CREATE VIRTUAL TABLE message_fts USING fts5(
        owner_key, content, reasoning, content='', tokenize='unicode61 remove_diacritics 2')
-- statement --
CREATE TABLE comparison (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	prompt TEXT NOT NULL, 
	blind BOOLEAN DEFAULT 0 NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
)
-- statement --
CREATE TABLE comparison_pane (
	id CHAR(32) NOT NULL, 
	comparison_id CHAR(32) NOT NULL, 
	slot INTEGER NOT NULL, 
	message_id CHAR(32) NOT NULL, 
	cost_usd FLOAT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_comparison_pane_slot UNIQUE (comparison_id, slot), 
	CONSTRAINT fk_comparison_pane_comparison FOREIGN KEY(comparison_id) REFERENCES comparison (id) ON DELETE CASCADE, 
	CONSTRAINT fk_comparison_pane_message FOREIGN KEY(message_id) REFERENCES message (id) ON DELETE CASCADE
)
-- statement --
CREATE TABLE comparison_vote (
	id CHAR(32) NOT NULL, 
	comparison_id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	verdict VARCHAR(16) NOT NULL, 
	winner_slot INTEGER, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (comparison_id), 
	CONSTRAINT fk_comparison_vote_comparison FOREIGN KEY(comparison_id) REFERENCES comparison (id) ON DELETE CASCADE
)
-- statement --
CREATE TABLE replica (
	id VARCHAR(64) NOT NULL, 
	host VARCHAR(255) DEFAULT '' NOT NULL, 
	pid INTEGER DEFAULT '0' NOT NULL, 
	started_at DATETIME NOT NULL, 
	last_seen DATETIME NOT NULL, 
	PRIMARY KEY (id)
)
-- statement --
CREATE TABLE attachment (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	mime VARCHAR(100) NOT NULL, 
	size INTEGER NOT NULL, 
	width INTEGER, 
	height INTEGER, 
	pages INTEGER, 
	text TEXT, 
	data BLOB NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_attachment_owner_sha256 UNIQUE (owner, sha256)
)
-- statement --
CREATE TABLE message_attachment (
	message_id CHAR(32) NOT NULL, 
	position INTEGER NOT NULL, 
	attachment_id CHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	PRIMARY KEY (message_id, position), 
	CONSTRAINT fk_message_attachment_message FOREIGN KEY(message_id) REFERENCES message (id) ON DELETE CASCADE, 
	CONSTRAINT fk_message_attachment_attachment FOREIGN KEY(attachment_id) REFERENCES attachment (id)
)
-- statement --
CREATE TABLE share_link (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	conversation_id CHAR(32), 
	comparison_id CHAR(32), 
	created_at DATETIME NOT NULL, whole_tree BOOLEAN DEFAULT 0 NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_share_link_token_hash UNIQUE (token_hash), 
	CONSTRAINT ck_share_link_one_target CHECK ((conversation_id IS NULL) <> (comparison_id IS NULL)), 
	CONSTRAINT fk_share_link_conversation FOREIGN KEY(conversation_id) REFERENCES conversation (id) ON DELETE CASCADE, 
	CONSTRAINT fk_share_link_comparison FOREIGN KEY(comparison_id) REFERENCES comparison (id) ON DELETE CASCADE
)
-- statement --
CREATE TABLE judge_verdict (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	comparison_id CHAR(32), 
	slot_a INTEGER, 
	slot_b INTEGER, 
	batch_run VARCHAR(64), 
	batch_prompt VARCHAR(200), 
	kind VARCHAR(8) NOT NULL, 
	judge VARCHAR(200) NOT NULL, 
	template TEXT NOT NULL, 
	template_hash VARCHAR(64) NOT NULL, 
	model_a VARCHAR(200) NOT NULL, 
	model_b VARCHAR(200), 
	verdict_ab VARCHAR(8), 
	verdict_ba VARCHAR(8), 
	final VARCHAR(8) NOT NULL, 
	consistent BOOLEAN, 
	score FLOAT, 
	raw_ab TEXT NOT NULL, 
	raw_ba TEXT, 
	input_tokens INTEGER, 
	output_tokens INTEGER, 
	cost_usd FLOAT, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT ck_judge_verdict_target CHECK ((comparison_id IS NOT NULL) OR (batch_run IS NOT NULL)), 
	CONSTRAINT fk_judge_verdict_comparison FOREIGN KEY(comparison_id) REFERENCES comparison (id) ON DELETE CASCADE
)
-- statement --
CREATE TABLE context_summary (
	id CHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	conversation_id CHAR(32) NOT NULL, 
	covers_message_id CHAR(32) NOT NULL, 
	covered INTEGER NOT NULL, 
	content TEXT NOT NULL, 
	provider VARCHAR(255) NOT NULL, 
	model VARCHAR(255) NOT NULL, 
	input_tokens INTEGER, 
	output_tokens INTEGER, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT fk_context_summary_conversation FOREIGN KEY(conversation_id) REFERENCES conversation (id) ON DELETE CASCADE, 
	CONSTRAINT fk_context_summary_message FOREIGN KEY(covers_message_id) REFERENCES message (id) ON DELETE CASCADE
)
-- statement --
CREATE INDEX ix_message_owner ON message (owner)
-- statement --
CREATE INDEX ix_conversation_owner_list ON conversation (owner, kind, archived, pinned, updated_at, id)
-- statement --
CREATE INDEX ix_comparison_owner_created ON comparison (owner, created_at)
-- statement --
CREATE INDEX ix_comparison_pane_message_id ON comparison_pane (message_id)
-- statement --
CREATE INDEX ix_comparison_vote_owner ON comparison_vote (owner)
-- statement --
CREATE INDEX ix_message_pending_instance ON message (instance_id) WHERE finish_reason = 'pending'
-- statement --
CREATE INDEX ix_message_attachment_attachment_id ON message_attachment (attachment_id)
-- statement --
CREATE INDEX ix_share_link_owner_created ON share_link (owner, created_at)
-- statement --
CREATE INDEX ix_share_link_conversation_id ON share_link (conversation_id)
-- statement --
CREATE INDEX ix_share_link_comparison_id ON share_link (comparison_id)
-- statement --
CREATE INDEX ix_message_parent_id ON message (parent_id)
-- statement --
CREATE INDEX ix_judge_verdict_owner_comparison ON judge_verdict (owner, comparison_id)
-- statement --
CREATE INDEX ix_judge_verdict_comparison_id ON judge_verdict (comparison_id)
-- statement --
CREATE INDEX ix_judge_verdict_owner_batch ON judge_verdict (owner, batch_run)
-- statement --
CREATE INDEX ix_context_summary_conversation ON context_summary (conversation_id, covers_message_id)
-- statement --
CREATE INDEX ix_context_summary_covers ON context_summary (covers_message_id)
-- statement --
CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN
        INSERT INTO message_fts(rowid, owner_key, content, reasoning)
        VALUES (new.rowid, 'o' || hex(new.owner), new.content, coalesce(new.reasoning, ''));
    END
-- statement --
CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, owner_key, content, reasoning)
        VALUES ('delete', old.rowid, 'o' || hex(old.owner), old.content, coalesce(old.reasoning, ''));
    END
-- statement --
CREATE TRIGGER message_fts_update AFTER UPDATE OF owner, content, reasoning ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, owner_key, content, reasoning)
        VALUES ('delete', old.rowid, 'o' || hex(old.owner), old.content, coalesce(old.reasoning, ''));
        INSERT INTO message_fts(rowid, owner_key, content, reasoning)
        VALUES (new.rowid, 'o' || hex(new.owner), new.content, coalesce(new.reasoning, ''));
    END
