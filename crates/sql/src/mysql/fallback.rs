//! placeholder
use gatehouse_core::policy::StatementInfo;
use super::MysqlContext;
pub(crate) fn classify(_text: &str, _ctx: &MysqlContext) -> Option<StatementInfo> { None }
