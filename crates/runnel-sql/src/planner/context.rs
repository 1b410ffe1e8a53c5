//! What DataFusion's `SqlToRel` sees of Runnel's catalog: tables and views as
//! `TableSource`s, and functions from the planner's session.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::TableReference;
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DFResult;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner, RelationPlanner};
use datafusion::logical_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, TableType, WindowUDF,
};

use crate::catalog::{Catalog, TableDef, ViewDef};

/// A catalog table as DataFusion's planner sees it.
#[derive(Debug)]
pub struct CatalogTableSource {
    pub table: Arc<TableDef>,
    /// Read `FOR SYSTEM_TIME AS OF`: the other side of a lookup or temporal join.
    pub lookup: bool,
    /// The `AS OF` time expression's text, when `lookup`.
    pub as_of: Option<String>,
}

impl TableSource for CatalogTableSource {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }
}

/// A view: DataFusion inlines its plan where it is scanned.
#[derive(Debug)]
struct ViewSource {
    view: Arc<ViewDef>,
}

impl TableSource for ViewSource {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.view.plan.schema().as_arrow().clone())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.view.plan))
    }
}

/// What `SqlToRel` asks while planning: tables from the catalog, functions from DataFusion.
pub(super) struct PlanningContext<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) state: &'a SessionState,
    pub(super) relation_planners: &'a [Arc<dyn RelationPlanner>],
}

impl ContextProvider for PlanningContext<'_> {
    fn get_table_source(&self, name: TableReference) -> DFResult<Arc<dyn TableSource>> {
        let table = name.table();
        let as_of = name
            .schema()
            .and_then(|s| s.strip_prefix(crate::parser::LOOKUP_SCHEMA))
            .map(|rest| rest.trim_start_matches(':').to_string());
        let lookup = as_of.is_some();
        if let Some(def) = self.catalog.table(table) {
            return Ok(Arc::new(CatalogTableSource {
                table: def,
                lookup,
                as_of,
            }));
        }
        if lookup {
            return datafusion::common::plan_err!(
                "FOR SYSTEM_TIME AS OF joins a table; '{table}' is not one"
            );
        }
        if let Some(view) = self.catalog.view(table) {
            return Ok(Arc::new(ViewSource { view }));
        }
        let known = self.catalog.names();
        datafusion::common::plan_err!(
            "unknown table '{table}'{}",
            if known.is_empty() {
                " (no tables are declared yet)".to_string()
            } else {
                format!(" (known: {})", known.join(", "))
            }
        )
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        self.relation_planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
