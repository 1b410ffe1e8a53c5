//! The layout each node kind yields at parallelism 1 and 4. Tables: `kafka_t` and
//! `kafka_u` can be read by as many readers as there are subtasks (`kafka`), `file_t`
//! and `rates` by one.

use super::*;

const TABLES: &str = "
    CREATE TABLE kafka_t (k BIGINT, v BIGINT, ts TIMESTAMP(3), proc AS PROCTIME(),
        WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'kafka');
    CREATE TABLE kafka_u (k BIGINT, w BIGINT, ts TIMESTAMP(3),
        WATERMARK FOR ts AS ts) WITH ('connector' = 'kafka');
    CREATE TABLE file_t (k BIGINT, v BIGINT, ts TIMESTAMP(3),
        WATERMARK FOR ts AS ts) WITH ('connector' = 'filesystem');
    CREATE TABLE rates (k BIGINT, rate DOUBLE) WITH ('connector' = 'filesystem');";

/// The plan of `query` over [`TABLES`].
fn plan_of(query: &str) -> StreamPlan {
    crate::test_plans::plan_script(&format!("{TABLES} {query}"))
}

/// The graph of `query` at `parallelism`, as `EXPLAIN` prints it (without its header).
fn layout(query: &str, parallelism: usize) -> Vec<String> {
    let plan = plan_of(query);
    let readers = |table: &TableDef| match table.connector() {
        Some("kafka") => usize::MAX,
        _ => 1,
    };
    let graph = JobGraph::build(&plan, parallelism, &readers).unwrap();
    graph
        .to_string()
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn stateless_operators_are_chained_onto_their_source() {
    let query = "SELECT k, v + 1 AS w FROM kafka_t WHERE v > 0;";
    assert_eq!(
        layout(query, 1),
        [
            "stage 0: Source kafka_t → Filter → Projection, 1 reader",
            "stage 1: Sink, 1 subtask ← stage 0, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(query, 4),
        [
            "stage 0: Source kafka_t → Filter → Projection, 4 readers",
            "stage 1: Sink, 1 subtask ← stage 0, merging 4 subtasks",
        ]
    );
}

#[test]
fn a_table_scanned_twice_is_read_once_for_both_scans() {
    // A self-join through two views reading different columns: one reader per split
    // of the table, its rows forwarded to each scan's stage.
    let query = "SELECT a.k, b.ts FROM (SELECT k, ts FROM kafka_u WHERE w > 0) AS a
        JOIN (SELECT k, ts FROM kafka_u) AS b
        ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE;";
    assert_eq!(
        layout(query, 2),
        [
            "stage 0: Source kafka_u, 2 readers",
            "stage 1: Filter → Projection, 2 subtasks ← stage 0, each subtask's rows",
            "stage 2: Projection, 2 subtasks ← stage 0, each subtask's rows",
            "stage 3: IntervalJoin → Projection, 2 subtasks ← stage 1 (left), rows hashed by [a.k]; \
             stage 2 (right), rows hashed by [b.k]",
            "stage 4: Sink, 1 subtask ← stage 3, merging 2 subtasks",
        ]
    );
    // Read on its own when asked to.
    let plan = crate::test_plans::plan_script_with(
        &format!("{TABLES} {query}"),
        &runnel_sql::PlanOptions {
            separate_source_reads: true,
            ..Default::default()
        },
    );
    let graph = JobGraph::build(&plan, 2, &|_: &TableDef| 2).unwrap();
    let sources = graph
        .stages
        .iter()
        .filter(|s| matches!(s.head, StageHead::Source { .. }))
        .count();
    assert_eq!(sources, 2);
}

#[test]
fn a_sub_plan_used_twice_runs_once() {
    let query = "SELECT k, n FROM (SELECT k, COUNT(*) AS n FROM kafka_t GROUP BY k)
        UNION ALL SELECT k, n FROM (SELECT k, COUNT(*) AS n FROM kafka_t GROUP BY k);";
    let aggregates = |options: &runnel_sql::PlanOptions| {
        let plan = crate::test_plans::plan_script_with(&format!("{TABLES} {query}"), options);
        let graph = JobGraph::build(&plan, 2, &|_: &TableDef| 2).unwrap();
        graph
            .stages
            .iter()
            .filter(|s| s.chain.iter().any(|c| c.node.name() == "UpdatingAggregate"))
            .count()
    };
    assert_eq!(aggregates(&Default::default()), 1);
    let separate = runnel_sql::PlanOptions {
        separate_sub_plans: true,
        ..Default::default()
    };
    assert_eq!(aggregates(&separate), 2);
}

#[test]
fn a_window_aggregate_is_hashed_by_its_keys_and_window_start() {
    let query = "SELECT k, window_start, COUNT(*) AS n
        FROM TABLE(TUMBLE(TABLE kafka_t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
        GROUP BY k, window_start, window_end;";
    // One subtask at parallelism 1: the aggregate is chained, nothing is hashed.
    assert_eq!(
        layout(query, 1),
        [
            "stage 0: Source kafka_t → WindowAssign → Projection → WindowAggregate → Projection, 1 reader",
            "stage 1: Sink, 1 subtask ← stage 0, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(query, 4),
        [
            "stage 0: Source kafka_t → WindowAssign → Projection, 4 readers",
            "stage 1: WindowAggregate → Projection, 4 subtasks ← stage 0, rows hashed by [kafka_t.k, window_start]",
            "stage 2: Sink, 1 subtask ← stage 1, merging 4 subtasks",
        ]
    );
}

#[test]
fn a_file_read_by_one_reader_is_hashed_at_parallelism_4() {
    let query = "SELECT k, COUNT(*) AS n FROM file_t GROUP BY k;";
    assert_eq!(
        layout(query, 1),
        [
            "stage 0: Source file_t → UpdatingAggregate → Projection, 1 reader",
            "stage 1: Sink, 1 subtask ← stage 0, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(query, 4),
        [
            "stage 0: Source file_t, 1 reader",
            "stage 1: UpdatingAggregate → Projection, 4 subtasks ← stage 0, rows hashed by [file_t.k]",
            "stage 2: Sink, 1 subtask ← stage 1, merging 4 subtasks",
        ]
    );
}

#[test]
fn sessions_and_over_windows_are_hashed_by_their_partition_keys() {
    let session = "SELECT k, window_start, COUNT(*) AS n
        FROM TABLE(SESSION(TABLE kafka_t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
        GROUP BY k, window_start, window_end;";
    assert_eq!(
        layout(session, 4),
        [
            "stage 0: Source kafka_t, 4 readers",
            "stage 1: WindowAssign → Projection → WindowAggregate → Projection, 4 subtasks ← stage 0, rows hashed by [kafka_t.k]",
            "stage 2: Sink, 1 subtask ← stage 1, merging 4 subtasks",
        ]
    );
    // Grouped by other keys than the sessions' partition keys, the aggregate cannot
    // take each session whole where it closes: it keeps windows of its own.
    let regrouped = "SELECT window_start, COUNT(*) AS n
        FROM TABLE(SESSION(TABLE kafka_t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
        GROUP BY window_start, window_end;";
    assert_eq!(
        layout(regrouped, 4),
        [
            "stage 0: Source kafka_t, 4 readers",
            "stage 1: WindowAssign → Projection, 4 subtasks ← stage 0, rows hashed by [kafka_t.k]",
            "stage 2: WindowAggregate → Projection, 4 subtasks ← stage 1, rows hashed by [window_start]",
            "stage 3: Sink, 1 subtask ← stage 2, merging 4 subtasks",
        ]
    );
    let over = "SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts
        RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) AS s FROM kafka_t;";
    assert_eq!(
        layout(over, 1),
        [
            "stage 0: Source kafka_t → OverWindow → Projection, 1 reader",
            "stage 1: Sink, 1 subtask ← stage 0, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(over, 4),
        [
            "stage 0: Source kafka_t, 4 readers",
            "stage 1: OverWindow → Projection, 4 subtasks ← stage 0, rows hashed by [kafka_t.k]",
            "stage 2: Sink, 1 subtask ← stage 1, merging 4 subtasks",
        ]
    );
}

#[test]
fn state_without_a_key_goes_to_one_subtask() {
    let top = "SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY v DESC) AS rn
        FROM kafka_t) WHERE rn <= 3;";
    assert_eq!(
        layout(top, 4),
        [
            "stage 0: Source kafka_t, 4 readers",
            "stage 1: TopN → Projection, 1 subtask ← stage 0, merging 4 subtasks",
            "stage 2: Sink, 1 subtask ← stage 1, merging 1 subtask",
        ]
    );
    let keyed = "SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k
        ORDER BY v DESC) AS rn FROM kafka_t) WHERE rn <= 3;";
    assert_eq!(
        layout(keyed, 4)[1],
        "stage 1: TopN → Projection, 4 subtasks ← stage 0, rows hashed by [kafka_t.k]"
    );
}

#[test]
fn a_union_chains_onto_each_input_and_the_next_stage_reads_them_all() {
    let query = "SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE (
            SELECT k, ts FROM kafka_t UNION ALL SELECT k, ts FROM file_t
        ), DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end;";
    assert_eq!(
        layout(query, 1),
        [
            "stage 0: Source kafka_t → Union → WindowAssign → Projection, 1 reader",
            "stage 1: Source file_t → Union → WindowAssign → Projection, 1 reader",
            "stage 2: WindowAggregate → Projection, 1 subtask ← stage 0, rows hashed by [window_start]; stage 1, rows hashed by [window_start]",
            "stage 3: Sink, 1 subtask ← stage 2, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(query, 4),
        [
            "stage 0: Source kafka_t → Union → WindowAssign → Projection, 4 readers",
            "stage 1: Source file_t → Union → WindowAssign → Projection, 1 reader",
            "stage 2: WindowAggregate → Projection, 4 subtasks ← stage 0, rows hashed by [window_start]; stage 1, rows hashed by [window_start]",
            "stage 3: Sink, 1 subtask ← stage 2, merging 4 subtasks",
        ]
    );
}

#[test]
fn joins_hash_each_side_by_its_keys() {
    let interval = "SELECT t.k, u.w FROM kafka_t t JOIN kafka_u u ON t.k = u.k
        AND t.ts BETWEEN u.ts - INTERVAL '1' MINUTE AND u.ts;";
    assert_eq!(
        layout(interval, 1),
        [
            "stage 0: Source kafka_t, 1 reader",
            "stage 1: Source kafka_u, 1 reader",
            "stage 2: IntervalJoin → Projection, 1 subtask ← stage 0 (left), rows hashed by [t.k]; stage 1 (right), rows hashed by [u.k]",
            "stage 3: Sink, 1 subtask ← stage 2, merging 1 subtask",
        ]
    );
    assert_eq!(
        layout(interval, 4)[2],
        "stage 2: IntervalJoin → Projection, 4 subtasks ← stage 0 (left), rows hashed by [t.k]; stage 1 (right), rows hashed by [u.k]"
    );
    let window = "SELECT l.k, l.window_start FROM
        (SELECT * FROM TABLE(TUMBLE(TABLE kafka_t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))) l
        JOIN (SELECT * FROM TABLE(TUMBLE(TABLE kafka_u, DESCRIPTOR(ts), INTERVAL '1' MINUTE))) r
        ON l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end;";
    let layout4 = layout(window, 4);
    assert!(
        layout4[2].starts_with("stage 2: WindowJoin → Projection, 4 subtasks ← stage 0 (left), rows hashed by [l.k, l.window_start, l.window_end, l.window_end]"),
        "{layout4:?}"
    );
}

#[test]
fn a_lookup_table_is_read_whole_and_broadcast_outside_checkpoints() {
    let query = "SELECT t.k, r.rate FROM kafka_t AS t
        JOIN rates FOR SYSTEM_TIME AS OF t.proc AS r ON t.k = r.k;";
    assert_eq!(
        layout(query, 4),
        [
            "stage 0: Source rates, 1 reader (read whole before the stream starts)",
            "stage 1: Source kafka_t → LookupJoin → Projection, 4 readers ← stage 0, the whole table to every subtask",
            "stage 2: Sink, 1 subtask ← stage 1, merging 4 subtasks",
        ]
    );
}

#[test]
fn a_table_asked_by_key_has_no_stage() {
    struct ByKey;
    impl TableLayout for ByKey {
        fn readers(&self, _table: &TableDef) -> usize {
            usize::MAX
        }
        fn reads_by_key(&self, table: &TableDef) -> bool {
            table.name == "rates"
        }
    }
    let plan = plan_of(
        "SELECT t.k, r.rate FROM kafka_t AS t
         JOIN rates FOR SYSTEM_TIME AS OF t.proc AS r ON t.k = r.k;",
    );
    let graph = JobGraph::build(&plan, 2, &ByKey).unwrap();
    let layout: Vec<String> = graph
        .to_string()
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        layout,
        [
            "stage 0: Source kafka_t → LookupJoin → Projection, 2 readers",
            "stage 1: Sink, 1 subtask ← stage 0, merging 2 subtasks",
        ]
    );
    // Its readers are the job's first checkpointed sources.
    assert_eq!(graph.checkpointed_sources(), 2);
}

#[test]
fn operator_ids_follow_build_order_one_per_subtask() {
    let plan = plan_of(
        "SELECT t.k, r.rate FROM (SELECT * FROM kafka_t WHERE v > 0) AS t
         JOIN rates FOR SYSTEM_TIME AS OF t.proc AS r ON t.k = r.k;",
    );
    let graph = JobGraph::build(&plan, 2, &|_: &TableDef| usize::MAX).unwrap();
    // The table's stage: not checkpointed, so its reader has no checkpoint index.
    assert!(matches!(
        graph.stages[0].head,
        StageHead::Source {
            first_source: None,
            ..
        }
    ));
    assert!(!graph.stages[0].checkpointed);
    // The stream's two readers are sources 0 and 1; its chain's ids come after the
    // table side's (none here), two per operator (one per subtask).
    let stream = &graph.stages[1];
    assert!(matches!(
        stream.head,
        StageHead::Source {
            first_source: Some(0),
            ..
        }
    ));
    let ids: Vec<(&str, Option<usize>)> = stream
        .chain
        .iter()
        .map(|c| (c.node.name(), c.first_id))
        .collect();
    assert_eq!(
        ids,
        [
            ("Filter", Some(0)),
            ("Projection", Some(2)),
            ("LookupJoin", Some(4)),
            ("Projection", Some(6)),
        ]
    );
    assert_eq!(graph.checkpointed_sources(), 2);
}
