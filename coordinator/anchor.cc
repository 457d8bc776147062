// Placeholder so the library has a source until its modules land.
namespace gantry { int coordinator_library_anchor = 0; }
