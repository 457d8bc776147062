// Placeholder so the library has a source until its modules land.
namespace gantry { int cli_library_anchor = 0; }
