//! Reading each table once per query: when a query scans a table several times (through
//! several views of one topic, as Nexmark's `person`/`auction`/`bid` views of one source,
//! or a self-join), every scan becomes the same [`SourceNode`] — the union of the columns
//! the scans read — under a projection to the scan's own columns. The job graph then
//! starts one reader per split of the table and sends its rows to every scan (Flink's
//! source reuse), so each record is read and decoded once, and the scans advance
//! together instead of one running ahead of the other.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::Expr;

use crate::error::Result;
use crate::plan::{SourceNode, StreamNode};

/// What makes two scans one read: the same table, on the same clock.
type ReadKey = (String, bool);

fn read_key(source: &SourceNode) -> ReadKey {
    (source.table.name.clone(), source.processing_time)
}

/// Rewrites every scan of a table the plan reads more than once into the table's one
/// shared source (see the module's documentation). A lookup join's table side is left
/// alone: it is read whole before the stream starts, not as a stream.
pub(crate) fn read_each_table_once(root: &mut StreamNode) -> Result<()> {
    let mut scans: BTreeMap<ReadKey, Vec<Option<Vec<usize>>>> = BTreeMap::new();
    visit_sources(root, &mut |source| {
        scans
            .entry(read_key(source))
            .or_default()
            .push(source.projection.clone());
    });
    // The columns each table's shared source reads: all when one scan reads all.
    let shared: BTreeMap<ReadKey, Option<Vec<usize>>> = scans
        .into_iter()
        .filter(|(_, projections)| projections.len() > 1)
        .map(|(key, projections)| {
            let union = projections
                .into_iter()
                .collect::<Option<Vec<Vec<usize>>>>()
                .map(|all| {
                    let mut union: Vec<usize> = all.into_iter().flatten().collect();
                    union.sort_unstable();
                    union.dedup();
                    union
                });
            (key, union)
        })
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    rewrite_scans(root, &shared)
}

/// Calls `f` on every source read as a stream (not a lookup join's table, which
/// `inputs_mut` leaves out).
fn visit_sources(node: &mut StreamNode, f: &mut dyn FnMut(&SourceNode)) {
    match node {
        StreamNode::Source(source) => f(source),
        other => other
            .inputs_mut()
            .into_iter()
            .for_each(|input| visit_sources(input, f)),
    }
}

fn rewrite_scans(
    node: &mut StreamNode,
    shared: &BTreeMap<ReadKey, Option<Vec<usize>>>,
) -> Result<()> {
    let StreamNode::Source(scan) = node else {
        return node
            .inputs_mut()
            .into_iter()
            .try_for_each(|input| rewrite_scans(input, shared));
    };
    let Some(columns) = shared.get(&read_key(scan)) else {
        return Ok(());
    };
    if scan.projection == *columns {
        return Ok(());
    }
    let qualifier = scan.schema.qualified_field(0).0.cloned();
    let table_schema = &scan.table.schema;
    let fields = match columns {
        Some(columns) => columns
            .iter()
            .map(|&i| (qualifier.clone(), Arc::new(table_schema.field(i).clone())))
            .collect(),
        None => table_schema
            .fields()
            .iter()
            .map(|f| (qualifier.clone(), f.clone()))
            .collect(),
    };
    let read_schema = Arc::new(DFSchema::new_with_metadata(fields, Default::default())?);
    let exprs = scan
        .schema
        .fields()
        .iter()
        .map(|f| Expr::Column(Column::new(qualifier.clone(), f.name())))
        .collect();
    let own_schema = scan.schema.clone();
    let read = SourceNode {
        table: scan.table.clone(),
        projection: columns.clone(),
        schema: read_schema.clone(),
        processing_time: scan.processing_time,
    };
    *node = StreamNode::Projection {
        input: Box::new(StreamNode::Source(read)),
        exprs,
        input_schema: read_schema,
        schema: own_schema,
    };
    Ok(())
}
