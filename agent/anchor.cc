// Placeholder so the library has a source until its modules land.
namespace gantry { int agent_library_anchor = 0; }
