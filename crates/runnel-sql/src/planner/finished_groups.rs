//! Freeing the groups of an aggregate without a window, and the partitions of a Top-N,
//! that can no longer change. A group is done when every row it gets comes from one row
//! `x` of a join side whose rows the join drops at a time they carry (`B.ts BETWEEN A.ts
//! AND A.expires` drops an auction once the watermark passes its `expires`), and no other
//! row of that side shares `x`'s key: the group key holds a join key of that side which
//! the connector guarantees unique ([`crate::TableDef::unique_fields`], Nexmark's auction
//! ids). Such a group is freed once the watermark passes `x`'s drop time, so Nexmark q4
//! (`GROUP BY A.id, A.category`) and q9 (`PARTITION BY A.id`) keep state for live auctions
//! only, with no `table.exec.state.ttl`.
//!
//! Why nothing is lost: the join drops `x` when a watermark passes its drop time, before
//! it forwards that watermark, and emits nothing of `x` after; `x` is the only row of its
//! side with its key, so no other row can feed the group later. The aggregate frees the
//! group on the same watermark, after every joined row of `x` has reached it (a row
//! joined with `x` comes from the one join subtask holding `x`'s key). Inner joins only:
//! an outer join's padded rows do not carry the key of a row that met nothing.

use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::{Expr, JoinType};

use crate::plan::{RegularJoinNode, StreamNode};

/// Marks every aggregate without a window and every Top-N under `node` whose groups can
/// be freed as described in the module's documentation, reading the drop-time column up
/// through the projections between it and the join when they left it out.
pub(super) fn free_finished_groups(node: &mut StreamNode) {
    match node {
        StreamNode::UpdatingAggregate(aggregate) if aggregate.fires_at_window_end.is_none() => {
            let keys = column_indexes(&aggregate.group_exprs, &aggregate.input_schema);
            if let Some(at) = done_at(&mut aggregate.input, &keys) {
                aggregate.input_schema = aggregate.input.schema();
                aggregate.finished_after = Some(at);
            }
        }
        StreamNode::TopN(top) => {
            let keys = column_indexes(&top.partition_by, &top.input_schema);
            // A Top-N emits its input's rows: only a column its input has already will do.
            let mut input = top.input.clone();
            if let Some(at) = done_at(&mut input, &keys) {
                if input.schema().fields().len() == top.input_schema.fields().len() {
                    top.input = input;
                    top.finished_after = Some(at);
                }
            }
        }
        _ => {}
    }
    for input in node.inputs_mut() {
        free_finished_groups(input);
    }
}

/// The indexes in `schema` of those of `exprs` that are plain columns.
fn column_indexes(exprs: &[Expr], schema: &DFSchema) -> Vec<usize> {
    exprs
        .iter()
        .filter_map(|e| match e.clone().unalias() {
            Expr::Column(c) => schema.index_of_column(&c).ok(),
            _ => None,
        })
        .collect()
}

/// When the rows of `node` that agree on the columns `keys` all come from one row of a
/// join side, dropped at a time it carries: the index of the column of `node` holding
/// that time (added to the projections on the way when they left it out). `None` (and
/// `node` unchanged) when that cannot be shown.
fn done_at(node: &mut StreamNode, keys: &[usize]) -> Option<usize> {
    match node {
        StreamNode::Filter {
            input,
            input_schema,
            ..
        } => {
            let at = done_at(input, keys)?;
            *input_schema = input.schema();
            Some(at)
        }
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            schema,
        } => {
            let inner: Vec<usize> = keys
                .iter()
                .filter_map(|&k| column_indexes(exprs.get(k..=k)?, input_schema).pop())
                .collect();
            let at = done_at(input, &inner)?;
            *input_schema = input.schema();
            super::pass_through(exprs, schema, input_schema, at)
        }
        StreamNode::RegularJoin(join) => join_done_at(join, keys),
        _ => None,
    }
}

/// [`done_at`] for a regular join whose rows are dropped by their own time bounds
/// ([`RegularJoinNode::state_ttl`] with a TTL of 0, from `super::joins::row_time_bounds`).
fn join_done_at(join: &RegularJoinNode, keys: &[usize]) -> Option<usize> {
    let (left_drop, right_drop, 0) = join.state_ttl? else {
        return None;
    };
    if join.join_type != JoinType::Inner {
        return None;
    }
    let left_width = join.left_schema.fields().len();
    let (left, right): (Vec<usize>, Vec<usize>) = keys.iter().partition(|&&k| k < left_width);
    let right: Vec<usize> = right.into_iter().map(|k| k - left_width).collect();
    if unique_join_key(&join.left, &join.left_schema, &join.left_keys, &left) {
        return Some(left_drop);
    }
    if unique_join_key(&join.right, &join.right_schema, &join.right_keys, &right) {
        return Some(left_width + right_drop);
    }
    None
}

/// Whether one of the columns `keys` of a join side is one of its join keys (so never
/// NULL in a joined row) and unique among the side's rows.
fn unique_join_key(
    side: &StreamNode,
    schema: &DFSchemaRef,
    join_keys: &[Expr],
    keys: &[usize],
) -> bool {
    column_indexes(join_keys, schema)
        .into_iter()
        .filter(|k| keys.contains(k))
        .any(|k| is_unique(side, k, Vec::new()))
}

/// Whether the field `path` inside column `index` of `node` never repeats across its
/// rows: it is read, through filters and projections, from a field its table's connector
/// guarantees unique.
fn is_unique(node: &StreamNode, index: usize, path: Vec<String>) -> bool {
    match node {
        StreamNode::Filter { input, .. } => is_unique(input, index, path),
        StreamNode::Projection {
            input,
            exprs,
            input_schema,
            ..
        } => {
            let Some((column, mut names)) = exprs
                .get(index)
                .and_then(|e| field_path(e.clone().unalias()))
            else {
                return false;
            };
            let Ok(inner) = input_schema.index_of_column(&column) else {
                return false;
            };
            names.extend(path);
            is_unique(input, inner, names)
        }
        StreamNode::Source(source) => {
            let Some(field) = source.schema.fields().get(index) else {
                return false;
            };
            let full: Vec<String> = std::iter::once(field.name().clone()).chain(path).collect();
            source.table.unique_fields.contains(&full)
        }
        _ => false,
    }
}

/// A column, or a field nested in one (`get_field(auction, 'id')`): the column and the
/// names leading to the field.
fn field_path(expr: Expr) -> Option<(Column, Vec<String>)> {
    match expr {
        Expr::Column(column) => Some((column, Vec::new())),
        Expr::ScalarFunction(call) if call.func.name() == "get_field" => {
            let mut args = call.args.into_iter();
            let (column, mut names) = field_path(args.next()?)?;
            for name in args {
                match name {
                    Expr::Literal(ScalarValue::Utf8(Some(name)), _) => names.push(name),
                    _ => return None,
                }
            }
            Some((column, names))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_script, Statement};
    use crate::{Catalog, StreamPlanner};

    /// Plans `query` over an `auction` table (its `id` unique when `unique_id`) and a
    /// `bid` table; returns what each aggregate and Top-N is freed by: the name of its
    /// `finished_after` column, or `None`.
    fn freed_by(query: &str, unique_id: bool) -> Vec<Option<String>> {
        let planner = StreamPlanner::new();
        let mut catalog = Catalog::default();
        let ddl = "CREATE TABLE auction (id BIGINT, category BIGINT, ts TIMESTAMP(3),
                expires TIMESTAMP(3), WATERMARK FOR ts AS ts)
                WITH ('connector' = 'filesystem', 'path' = 'a', 'format' = 'json');
            CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                WATERMARK FOR ts AS ts)
                WITH ('connector' = 'filesystem', 'path' = 'b', 'format' = 'json')";
        for statement in parse_script(ddl).unwrap() {
            let Statement::CreateTable(t) = statement else {
                panic!()
            };
            let mut table = planner.create_table(&catalog, *t).unwrap();
            if unique_id && table.name == "auction" {
                table.unique_fields = vec![vec!["id".to_string()]];
            }
            catalog.add_table(table).unwrap();
        }
        let Statement::Query(q) = parse_script(query).unwrap().remove(0) else {
            panic!()
        };
        let plan = planner.plan_query(&catalog, *q, None).unwrap();
        fn visit(node: &StreamNode, out: &mut Vec<Option<String>>) {
            let name =
                |schema: &DFSchema, at: Option<usize>| at.map(|at| schema.field(at).name().clone());
            match node {
                StreamNode::UpdatingAggregate(a) => {
                    out.push(name(&a.input_schema, a.finished_after))
                }
                StreamNode::TopN(t) => out.push(name(&t.input_schema, t.finished_after)),
                _ => {}
            }
            for input in node.inputs() {
                visit(input, out);
            }
        }
        let mut out = Vec::new();
        visit(&plan.root, &mut out);
        out
    }

    const BOUNDED: &str = "A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires";

    /// Nexmark q4's shape: the inner aggregate per auction is freed as its auction
    /// expires (the optimizer had pruned `expires` above the join: it is read again); the
    /// outer one, per category, is not.
    #[test]
    fn groups_of_one_unique_row_are_freed_when_the_join_drops_it() {
        let q4 = format!(
            "SELECT category, AVG(final) FROM (
                 SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
                 WHERE {BOUNDED} GROUP BY A.id, A.category) Q
             GROUP BY category"
        );
        assert_eq!(freed_by(&q4, true), [None, Some("expires".to_string())]);
        // q9's shape: the Top-N per auction.
        let q9 = format!(
            "SELECT * FROM (SELECT A.*, B.price, ROW_NUMBER() OVER (
                 PARTITION BY A.id ORDER BY B.price DESC) AS rownum
             FROM auction A, bid B WHERE {BOUNDED}) WHERE rownum <= 1"
        );
        assert_eq!(freed_by(&q9, true), [Some("expires".to_string())]);
    }

    /// Nothing is freed when another auction could share the id, when the group key does
    /// not hold it, when the join is an outer one, or when it drops no row by its time.
    #[test]
    fn groups_that_could_still_change_are_kept() {
        let per_auction = |join: &str, condition: &str| {
            format!(
                "SELECT A.id, MAX(B.price) FROM auction A {join} bid B ON {condition}
                 GROUP BY A.id"
            )
        };
        assert_eq!(
            freed_by(&per_auction("JOIN", BOUNDED), true),
            [Some("expires".to_string())]
        );
        assert_eq!(freed_by(&per_auction("JOIN", BOUNDED), false), [None]);
        assert_eq!(freed_by(&per_auction("LEFT JOIN", BOUNDED), true), [None]);
        assert_eq!(
            freed_by(&per_auction("JOIN", "A.id = B.auction"), true),
            [None]
        );
        let per_category = format!(
            "SELECT A.category, MAX(B.price) FROM auction A JOIN bid B ON {BOUNDED}
             GROUP BY A.category"
        );
        assert_eq!(freed_by(&per_category, true), [None]);
    }
}
