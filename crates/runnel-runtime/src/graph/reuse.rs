//! Which parts of a plan run once for several uses: a table the plan scans more than
//! once, a sub-plan it holds twice (Flink's source and sub-plan reuse). Subtrees are
//! compared by their full description.

use std::collections::HashMap;

use runnel_sql::{StreamNode, StreamPlan};

/// A subtree of the plan, as its full description: two subtrees with the same key
/// compute the same rows.
pub(super) type SubPlanKey = String;

pub(super) fn sub_plan_key(node: &StreamNode) -> SubPlanKey {
    // Names DataFusion makes up inside a subtree (`__datafusion_extracted_7`) are numbered
    // per query, so two copies of one view differ in them; they are renumbered in order of
    // appearance. The subtree's output columns are kept as they are: what reads them
    // names them.
    const MADE_UP: &str = "__datafusion_extracted_";
    let text = format!("{node:?}");
    let mut key = format!("{:?}\n", node.schema());
    let mut numbers: Vec<&str> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(MADE_UP) {
        let (before, name) = rest.split_at(at + MADE_UP.len());
        key.push_str(before);
        let digits = name.len() - name.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = name.split_at(digits);
        let index = numbers
            .iter()
            .position(|n| *n == number)
            .unwrap_or_else(|| {
                numbers.push(number);
                numbers.len() - 1
            });
        key.push_str(&format!("#{index}"));
        rest = after;
    }
    key.push_str(rest);
    key
}

/// How many times each subtree occurs in the plan as a stream (a lookup join's table side
/// is read on its own, before the stream). A repeated subtree's own subtrees are counted
/// in its first occurrence only: it is built once.
/// Only sources are counted unless `plan.reuse_sub_plans`, none unless
/// `plan.reuse_sources` too.
pub(super) fn count_sub_plans(plan: &StreamPlan) -> HashMap<SubPlanKey, usize> {
    fn visit(plan: &StreamPlan, node: &StreamNode, counts: &mut HashMap<SubPlanKey, usize>) {
        let reused = match node {
            StreamNode::Source(_) => plan.reuse_sources,
            _ => plan.reuse_sub_plans,
        };
        if reused {
            let count = counts.entry(sub_plan_key(node)).or_default();
            *count += 1;
            if *count > 1 {
                return;
            }
        }
        match node {
            StreamNode::LookupJoin(join) => visit(plan, &join.input, counts),
            other => other
                .inputs()
                .into_iter()
                .for_each(|input| visit(plan, input, counts)),
        }
    }
    let mut counts = HashMap::new();
    visit(plan, &plan.root, &mut counts);
    counts
}
